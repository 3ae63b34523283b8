// Package configs ships the monitoring of bluegreen as files: the Prometheus
// scrape configuration and alerting rules under prometheus/, and the Grafana
// dashboard and provisioning under grafana/ (see README.md).
//
// The package has no code. Its tests prove the files against the real
// programs: they build the proxy and the demo app, run them with a real
// Prometheus server loading the shipped configuration, drive a cutover and an
// auto-rollback, and query every expression of the dashboard and the alerts.
package configs
