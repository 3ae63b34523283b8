package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/rollout"
)

// fleet is what serve knows about the state store and the election. With
// the file store the store is always up, this proxy always leads and there
// is no election (elect is nil).
type fleet struct {
	kind  string
	up    func() bool
	leads func() bool // nil: always leader
	elect func(ctx context.Context, id string, ttl time.Duration, changed func())
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
