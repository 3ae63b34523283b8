package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/rollout"
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
	return problems
}

// fleet is what serve knows about the store and the election. With the
// file store es is nil: the store is always up and this proxy always leads.
type fleet struct {
	es     *etcd.Store
	leader atomic.Pointer[etcd.Leader] // set once the campaign has started
}

func newFleet(es *etcd.Store) *fleet { return &fleet{es: es} }

func (f *fleet) up() bool { return f.es == nil || f.es.Up() }

// isLeader reports whether this replica runs auto-rollback.
func (f *fleet) isLeader() bool {
	if f.es == nil {
		return true
	}
	l := f.leader.Load()
	return l != nil && l.IsLeader()
}

// leadership is the controller's view: nil (always leader) without etcd.
func (f *fleet) leadership() rollout.Leadership {
	if f.es == nil {
		return nil
	}
	return leaderFunc(f.isLeader)
}

type leaderFunc func() bool

func (l leaderFunc) IsLeader() bool { return l() }

// elect campaigns until ctx ends; changed is called on every change.
func (f *fleet) elect(ctx context.Context, id string, ttl time.Duration, changed func()) {
	l := f.es.Elect(ctx, id, ttl, func(bool) { changed() })
	f.leader.Store(l)
	<-l.Done()
}

func (f *fleet) status() admin.StoreStatus {
	if f.es == nil {
		return admin.StoreStatus{Kind: "file", Up: true}
	}
	lead := f.isLeader()
	return admin.StoreStatus{Kind: "etcd", Up: f.es.Up(), Leader: &lead}
}

func (f *fleet) register(reg prometheus.Registerer) error {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bluegreen_state_store_up",
			Help: "1 when the state store answered the last operation or probe, 0 when it is unreachable (routing keeps the last applied state).",
		}, func() float64 { return b(f.up()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bluegreen_auto_rollback_leader",
			Help: "1 when this replica runs auto-rollback (always with a file store; the elected replica in a fleet).",
		}, func() float64 { return b(f.isLeader()) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("fleet metrics: %w", err)
		}
	}
	return nil
}

// openStore opens the state store named by cfg.State: the file store, or
// the etcd store for an etcd:// spec.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (state.Store, *etcd.Store, error) {
	store, err := state.Open(cfg.State)
	if err == nil {
		return store, nil, nil
	}
	if !errors.Is(err, state.ErrUnsupportedScheme) {
		return nil, nil, err
	}
	es, err := etcd.Open(ctx, cfg.State, etcd.Options{
		OpTimeout: cfg.EtcdTimeout,
		CAFile:    cfg.EtcdCAFile, CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile,
		Username: cfg.EtcdUsername, Password: cfg.etcd.password,
		Log: log.With("store", "etcd"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open state store: %w", err)
	}
	return es, es, nil
}
