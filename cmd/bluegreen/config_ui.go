package main

import "github.com/cryoprotect/bluegreen/health"

// checkUI validates the status page's variables.
func (c Config) checkUI(bad func(name, value, expected string)) {
	if _, err := health.ParseVersionSource(c.HealthVersion); err != nil {
		bad("HEALTH_VERSION", c.HealthVersion, `expected header:NAME, json:FIELD or "" (none)`)
	}
}

// versionSource is where health probes read the version (validated by checkUI).
func (c Config) versionSource() health.VersionSource {
	v, _ := health.ParseVersionSource(c.HealthVersion)
	return v
}
