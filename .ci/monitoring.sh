#!/usr/bin/env bash
# Monitoring stage: checks the shipped Prometheus configuration and alert
# rules with promtool. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
case " ${GOFLAGS:-} " in
  *" -buildvcs=false "*) ;;
  *) export GOFLAGS="${GOFLAGS:-} -buildvcs=false" ;;
esac

section() { printf '\n==== %s ====\n' "$*"; }

section "monitoring: tools"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt-get install -y --no-install-recommends prometheus ||
    { apt-get update && apt-get install -y --no-install-recommends prometheus; }
fi
# The package may start a system Prometheus on :9090; nothing here uses it:
# the tests start their own server on free loopback ports.
promtool --version | head -n 1
prometheus --version | head -n 1

section "monitoring: promtool"
promtool check config configs/prometheus/prometheus.yml
promtool check rules configs/prometheus/alerts.yml
promtool test rules configs/prometheus/alerts_test.yml

# The Go tests of configs/ (the real proxy, demo apps and Prometheus server)
# run in the main suite, go test -race ./..., with CI set so they cannot skip.
