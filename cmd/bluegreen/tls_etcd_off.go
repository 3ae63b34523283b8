//go:build noetcd

package main

import (
	"github.com/caddyserver/certmagic"

	"github.com/cryoprotect/bluegreen/state"
)

// acmeFleetStore: a binary without etcd keeps certificates in
// BLUEGREEN_ACME_STORAGE.
func acmeFleetStore(state.Store) certmagic.Storage { return nil }
