package main

import (
	"strconv"
	"strings"
)

// minAutoUpstreamConns is the least the default pool size falls to when the
// open-files limit is small or unknown.
const minAutoUpstreamConns = 64

// checkUpstreamPool validates BLUEGREEN_UPSTREAM_MAX_CONNS: the most
// connections to one instance kept open for reuse. The pool grows to what the
// load needs up to it; beyond it, a request's connection is closed after its
// answer. Unset or "auto": a quarter of the open-files limit (each client
// connection and each upstream connection costs a file descriptor, and the
// proxy talks to both colours), at least minAutoUpstreamConns.
func (cfg *Config) checkUpstreamPool(bad func(name, value, expected string), nofile func() uint64) {
	v := strings.TrimSpace(cfg.UpstreamMaxConns)
	if v == "" || v == "auto" {
		cfg.upstreamMaxConns = autoUpstreamConns(nofile())
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		bad("UPSTREAM_MAX_CONNS", cfg.UpstreamMaxConns, "expected a positive number of connections per instance, or auto")
		return
	}
	cfg.upstreamMaxConns = n
}

// autoUpstreamConns sizes the pool from the open-files limit.
func autoUpstreamConns(nofile uint64) int {
	n := nofile / 4
	if n < minAutoUpstreamConns {
		return minAutoUpstreamConns
	}
	if n > 1<<20 {
		return 1 << 20
	}
	return int(n)
}
