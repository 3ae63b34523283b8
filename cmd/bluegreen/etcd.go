//go:build !noetcd

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cryoprotect/bluegreen/state"
	"github.com/cryoprotect/bluegreen/state/etcd"
)

// etcdOptions are the etcd settings derived by loadConfig.
type etcdOptions struct {
	password string
	ttl      time.Duration
}

// loadEtcd checks the etcd variables of an etcd:// state spec. Problems
// that bad does not report (two variables in conflict) are returned.
func (cfg *Config) loadEtcd(bad func(name, value, expected string)) []string {
	var problems []string
	if _, err := etcd.ParseSpec(cfg.State); err != nil {
		bad("STATE", cfg.State, "expected etcd://host:2379,host:2379/prefix: "+err.Error())
	}
	for _, f := range []struct{ name, path string }{
		{"ETCD_CA_FILE", cfg.EtcdCAFile}, {"ETCD_CERT_FILE", cfg.EtcdCertFile}, {"ETCD_KEY_FILE", cfg.EtcdKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.name, f.path, "cannot read the file: "+shortFileError(err))
		}
	}
	if (cfg.EtcdCertFile == "") != (cfg.EtcdKeyFile == "") {
		problems = append(problems, envPrefix+"ETCD_CERT_FILE and "+envPrefix+"ETCD_KEY_FILE must be set together (a client certificate and its key)")
	}
	switch {
	case cfg.EtcdPassword != "" && cfg.EtcdPasswordFile != "":
		problems = append(problems, envPrefix+"ETCD_PASSWORD and "+envPrefix+"ETCD_PASSWORD_FILE are both set: set only one")
	case cfg.EtcdPasswordFile != "":
		b, err := os.ReadFile(cfg.EtcdPasswordFile)
		switch {
		case err != nil:
			bad("ETCD_PASSWORD_FILE", cfg.EtcdPasswordFile, "cannot read the password file: "+shortFileError(err))
		case strings.TrimSpace(string(b)) == "":
			bad("ETCD_PASSWORD_FILE", cfg.EtcdPasswordFile, "the password file is empty")
		default:
			cfg.etcd.password = strings.TrimRight(string(b), "\r\n")
		}
	default:
		cfg.etcd.password = cfg.EtcdPassword
	}
	if cfg.etcd.password != "" && cfg.EtcdUsername == "" {
		problems = append(problems, envPrefix+"ETCD_PASSWORD is set without "+envPrefix+"ETCD_USERNAME")
	}
	if cfg.EtcdTimeout <= 0 {
		bad("ETCD_TIMEOUT", cfg.EtcdTimeout.String(), "expected a positive duration such as 2s")
	}
	if cfg.EtcdLeaseTTL < time.Second {
		bad("ETCD_LEASE_TTL", cfg.EtcdLeaseTTL.String(), "expected a duration of at least 1s, such as 5s")
	}
	cfg.etcd.ttl = cfg.EtcdLeaseTTL
	return append(problems, cfg.loadFleetCache(bad)...)
}

// loadFleetCache checks BLUEGREEN_STATE_CACHE, _STATE_MIGRATE_FROM and
// _ETCD_START_WAIT (used with an etcd store only).
func (cfg *Config) loadFleetCache(bad func(name, value, expected string)) []string {
	if cfg.StateCache != "off" {
		if fi, err := os.Stat(filepath.Dir(cfg.StateCache)); err != nil || !fi.IsDir() {
			bad("STATE_CACHE", cfg.StateCache, `its directory does not exist (the file itself is created on the first state); "off" keeps no local copy`)
		}
	}
	if cfg.StateMigrateFrom != "" {
		scheme, path, err := state.ParseSpec(cfg.StateMigrateFrom)
		if err != nil || scheme != "file" {
			bad("STATE_MIGRATE_FROM", cfg.StateMigrateFrom, "expected file:PATH (the state file of a single proxy)")
		} else if _, err := state.NewFileStore(path); err != nil {
			bad("STATE_MIGRATE_FROM", cfg.StateMigrateFrom, "its directory does not exist")
		}
	}
	if cfg.EtcdStartWait < 0 {
		bad("ETCD_START_WAIT", cfg.EtcdStartWait.String(), "expected a duration of at least 0, such as 30s")
	}
	return nil
}

// etcdFleet is the etcd side of a fleet: the store's health and the
// election of the replica that runs auto-rollback.
type etcdFleet struct {
	es     *etcd.Store
	leader atomic.Pointer[etcd.Leader] // set once the campaign has started
}

func (e *etcdFleet) isLeader() bool {
	l := e.leader.Load()
	return l != nil && l.IsLeader()
}

// campaign runs for the leadership until ctx ends; changed is called on
// every change.
func (e *etcdFleet) campaign(ctx context.Context, id string, ttl time.Duration, changed func()) {
	l := e.es.Elect(ctx, id, ttl, func(bool) { changed() })
	e.leader.Store(l)
	<-l.Done()
}

// openStore opens the state store named by cfg.State: the file store, or
// the etcd store for an etcd:// spec.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (state.Store, *fleet, error) {
	store, err := state.Open(cfg.State)
	if err == nil {
		return store, fileFleet(), nil
	}
	if !errors.Is(err, state.ErrUnsupportedScheme) {
		return nil, nil, err
	}
	es, err := etcd.Open(ctx, cfg.State, etcd.Options{
		OpTimeout: cfg.EtcdTimeout,
		CAFile:    cfg.EtcdCAFile, CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile,
		Username: cfg.EtcdUsername, Password: cfg.etcd.password,
		Log: log.With("store", "etcd"), CountsTTL: cfg.EtcdLeaseTTL,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open state store: %w", err)
	}
	store, err = withCache(es, cfg, log)
	if err != nil {
		es.Close()
		return nil, nil, err
	}
	ef := &etcdFleet{es: es}
	return store, &fleet{kind: "etcd", up: es.Up, leads: ef.isLeader, elect: ef.campaign, counts: es, startWait: cfg.EtcdStartWait}, nil
}

// withCache puts the replica's local cache (BLUEGREEN_STATE_CACHE) and the
// seeds of an empty etcd (BLUEGREEN_STATE_MIGRATE_FROM, then the cache) in
// front of the etcd store.
func withCache(es *etcd.Store, cfg Config, log *slog.Logger) (state.Store, error) {
	var seeds []state.Seed
	if cfg.StateMigrateFrom != "" {
		_, path, err := state.ParseSpec(cfg.StateMigrateFrom)
		if err != nil {
			return nil, err
		}
		fs, err := state.NewFileStore(path)
		if err != nil {
			return nil, fmt.Errorf("%sSTATE_MIGRATE_FROM: %w", envPrefix, err)
		}
		seeds = append(seeds, state.Seed{Name: cfg.StateMigrateFrom, Load: func() (state.State, error) {
			return fs.Load(context.Background())
		}})
	}
	var cache *state.Cache
	if cfg.StateCache != "off" {
		var err error
		if cache, err = state.OpenCache(cfg.StateCache); err != nil {
			return nil, fmt.Errorf("%sSTATE_CACHE: %w", envPrefix, err)
		}
		seeds = append(seeds, state.Seed{Name: "state cache " + cfg.StateCache, Load: cache.Load})
	}
	return state.NewCachedStore(es, cache, seeds, log.With("store", "etcd")), nil
}
