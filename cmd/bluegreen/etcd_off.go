//go:build noetcd

package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/cryoprotect/bluegreen/state"
)

// Built with -tags noetcd: the lean binary of the default container image,
// without the etcd client. Only the file store is available.

type etcdOptions struct {
	password string
	ttl      time.Duration
}

func (cfg *Config) loadEtcd(bad func(name, value, expected string)) []string {
	bad("STATE", cfg.State, "this binary was built without etcd support (-tags noetcd); use file:PATH or a build with etcd (the -fleet image)")
	return nil
}

func openStore(ctx context.Context, cfg Config, log *slog.Logger) (state.Store, *fleet, error) {
	store, err := state.Open(cfg.State)
	if err != nil {
		return nil, nil, err
	}
	return store, fileFleet(), nil
}
