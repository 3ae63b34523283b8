package main

import (
	"context"
	"fmt"

	"github.com/cryoprotect/bluegreen/internal/adminclient"
)

// healthcheck asks the admin listener whether the proxy is ready (or, with
// --live, alive). It makes one attempt, exits only 0 or 1, and prints
// nothing on success: it is the Docker HEALTHCHECK of a scratch image.
func (c *clientCmd) healthcheck(ctx context.Context, args []string) int {
	fs := c.flagSet()
	live := fs.Bool("live", false, "check liveness (/healthz) instead of readiness (/readyz)")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen healthcheck [--live]",
		about: `Exits 0 when the proxy is ready to serve (GET /readyz answers 200), 1 otherwise.
With --live, checks only that the process answers (GET /healthz). One attempt,
at most 2s, no output on success: meant for a Docker HEALTHCHECK. Without
BLUEGREEN_ADMIN_URL it probes the admin listener named by BLUEGREEN_ADMIN_LISTEN
(a wildcard host such as 0.0.0.0 or [::] becomes loopback).`,
	}, args, clientExitFailed); done {
		return code
	}
	base, err := adminclient.HealthURLFromEnv(c.getenv)
	if err != nil {
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", err)
		return clientExitFailed
	}
	path := adminclient.ReadyPath
	if *live {
		path = adminclient.LivePath
	}
	if err := adminclient.Probe(ctx, base, path, c.o.healthTimeout); err != nil {
		return c.errorf(clientExitFailed, "%v", err)
	}
	return clientExitOK
}
