package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// fleet is what serve knows about the state store and the election. With
// the file store the store is always up, this proxy always leads and there
// is no election (elect is nil).
type fleet struct {
	kind  string
	up    func() bool
	leads func() bool // nil: always leader
	elect func(ctx context.Context, id string, ttl time.Duration, changed func())
	// counts carries the replicas' rollout counts to the leader (nil with
	// the file store: one replica, its own counts).
	counts rollout.FleetCounts
	// startWait is how long start retries while the store is unreachable
	// and there is no cached state (0: no retry).
	startWait time.Duration
}

// start runs init (the controller's Init). While the store is unreachable
// and there is no cached state to start from, it retries with backoff for
// startWait, then gives up with an error that says so (exit 1). Any other
// failure is a startup error (exit 2): bad stored state, credentials etcd
// refuses.
func (f *fleet) start(ctx context.Context, init func(context.Context) error, log *slog.Logger) error {
	deadline := time.Now().Add(f.startWait)
	backoff := 250 * time.Millisecond
	for {
		err := init(ctx)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, state.ErrUnavailable):
			return startupError{err}
		case time.Now().Add(backoff).After(deadline):
			return fmt.Errorf("cannot start: the state store is unreachable and there is no cached state to serve from (waited %s, %sETCD_START_WAIT): %w", f.startWait, envPrefix, err)
		}
		log.Warn("state store unreachable and no cached state: waiting for it before serving", "retry_in", backoff.String(), "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func fileFleet() *fleet { return &fleet{kind: "file", up: func() bool { return true }} }

// isLeader reports whether this replica runs auto-rollback.
func (f *fleet) isLeader() bool { return f.leads == nil || f.leads() }

// leadership is the controller's view: nil (always leader) without an election.
func (f *fleet) leadership() rollout.Leadership {
	if f.leads == nil {
		return nil
	}
	return leaderFunc(f.leads)
}

type leaderFunc func() bool

func (l leaderFunc) IsLeader() bool { return l() }

func (f *fleet) status() admin.StoreStatus {
	if f.leads == nil {
		return admin.StoreStatus{Kind: f.kind, Up: f.up()}
	}
	lead := f.isLeader()
	return admin.StoreStatus{Kind: f.kind, Up: f.up(), Leader: &lead}
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
