package main

import (
	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/proxy"
)

// withEjections is the health view of the admin API: the active checks'
// results plus the data path's passive outlier ejections.
type withEjections struct {
	checkers
	router *proxy.Router
}

func (v withEjections) Instances(color string) []health.InstanceStatus {
	inst := v.checkers.Instances(color)
	p := v.router.Pool(color)
	if p == nil {
		return inst
	}
	for i := range inst {
		for _, b := range p.Backends() {
			if b.Name() != inst[i].URL {
				continue
			}
			if ej, until := b.Ejected(); ej {
				inst[i].Ejected, inst[i].EjectedUntil = true, &until
			}
		}
	}
	return inst
}
