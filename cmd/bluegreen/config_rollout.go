package main

import (
	"github.com/cryoprotect/bluegreen/proxy"
	"github.com/cryoprotect/bluegreen/rollout"
)

// checkRollout validates the progressive-delivery variables.
func (cfg *Config) checkRollout(bad func(name, value, expected string)) {
	if _, err := proxy.ParseRolloutKey(cfg.RolloutKey); err != nil {
		bad("ROLLOUT_KEY", cfg.RolloutKey, `expected "cookie", "header:NAME" or "ip"`)
	}
	if d := cfg.RolloutAnalysisInterval; d <= 0 || d > rollout.MaxAnalysisEvery {
		bad("ROLLOUT_ANALYSIS_INTERVAL", d.String(), "expected a positive duration of at most "+rollout.MaxAnalysisEvery.String())
	}
}

// rolloutKey is the parsed BLUEGREEN_ROLLOUT_KEY (validated by checkRollout).
func (cfg *Config) rolloutKey() proxy.RolloutKey {
	k, _ := proxy.ParseRolloutKey(cfg.RolloutKey)
	return k
}
