// Command bluegreen is a reverse proxy for blue/green releases: it sends live
// traffic to the healthy instances of the active colour and switches colours
// atomically through its admin API.
//
// Usage:
//
//	bluegreen [serve]     run the proxy (configuration from BLUEGREEN_* variables)
//	bluegreen demo        the proxy plus a blue and a green demo app, in one process
//	bluegreen status      show the active colour and the health of every instance
//	bluegreen cutover     switch live traffic to the other colour
//	bluegreen rollback    switch back to the previous colour
//	bluegreen history     list recent switches
//	bluegreen healthcheck exit 0 when the proxy is ready (Docker HEALTHCHECK)
//	bluegreen version     print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"
)

// version is stamped at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes of the serve and demo subcommands.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure, such as a listener that cannot bind
	exitConfig  = 2 // bad configuration or unreadable stored state
)

func main() {
	ctx, stop := notifyStop(context.Background())
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `bluegreen: a reverse proxy for blue/green releases

Usage:
  bluegreen [serve]        run the proxy; configuration from BLUEGREEN_* variables
  bluegreen demo           the proxy plus a blue and a green demo app in one process
  bluegreen status         show the active colour and every instance's health
  bluegreen cutover        switch live traffic to the other colour
  bluegreen rollback       switch back to the previous colour
  bluegreen history        list recent switches
  bluegreen rollout        shift traffic to the other colour in steps (promote|pause|resume|abort|status)
  bluegreen healthcheck    exit 0 when the proxy is ready (for Docker HEALTHCHECK)
  bluegreen version        print the version (also --version)

Run "bluegreen <command> --help" (or "bluegreen help <command>") for a command's flags.
Client commands reach the admin API at BLUEGREEN_ADMIN_URL (default http://127.0.0.1:8081)
with the token from BLUEGREEN_ADMIN_TOKEN or BLUEGREEN_ADMIN_TOKEN_FILE.
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		cmd, args = "help", nil
	} else if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		cmd, args = "version", nil
	}
	if cmd == "help" && len(args) > 0 && args[0] != "help" {
		cmd, args = args[0], []string{"--help"} // "help cutover" is "cutover --help"
	}
	getenv := func(k string) string {
		for _, kv := range environ {
			if key, v, ok := strings.Cut(kv, "="); ok && key == k {
				return v
			}
		}
		return ""
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, environ, stdout, stderr)
	case "demo":
		return runDemo(ctx, args, environ, stdout, stderr)
	case "status", "cutover", "rollback", "history", "healthcheck", "rollout":
		return runClient(ctx, cmd, args, getenv, stdout, stderr)
	case "version":
		if wantsHelp(args) {
			fmt.Fprintln(stdout, "Usage: bluegreen version\n\nPrints the version and the Go toolchain it was built with.")
			return exitOK
		}
		fmt.Fprintf(stdout, "bluegreen %s\n", versionString())
		return exitOK
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "bluegreen: unknown command %q\n\n%s", cmd, usage)
	return exitConfig
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func versionString() string {
	v := version
	bi, ok := debug.ReadBuildInfo()
	if v == "" {
		v = "dev"
		if ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if ok {
		return v + " (" + bi.GoVersion + ")"
	}
	return v
}

const serveUsage = `Usage: bluegreen [serve]

Runs the proxy. Configuration comes from the environment:

  BLUEGREEN_BLUE_URLS, BLUEGREEN_GREEN_URLS   comma-separated backend base URLs (required)
  BLUEGREEN_LISTEN             public listener (default :8080)
  BLUEGREEN_ADMIN_LISTEN       admin listener (default 127.0.0.1:8081)
  BLUEGREEN_INITIAL_COLOR      active colour when the state store is empty (default blue)
  BLUEGREEN_STATE              file:PATH (default file:./bluegreen-state.json) or etcd://host:2379,.../prefix
  BLUEGREEN_HEALTH_PATH        probe path (default /health)
  BLUEGREEN_HEALTH_INTERVAL    probe cadence (default 2s)
  BLUEGREEN_HEALTH_TIMEOUT     probe timeout (default 1s)
  BLUEGREEN_HEALTH_RISE/FALL   passes to turn healthy / failures to turn unhealthy (default 2/3)
  BLUEGREEN_ADMIN_TOKEN[_FILE] bearer token for mutating admin calls
  BLUEGREEN_AUTO_ROLLBACK      roll back when the new colour goes bad (default true)
  BLUEGREEN_ROLLBACK_WINDOW    watch window after a cutover (default 5m)
  BLUEGREEN_DRAIN_TIMEOUT      grace for long-lived connections and shutdown (default 30s)
  BLUEGREEN_SHUTDOWN_DELAY     after SIGTERM, /readyz answers 503 while serving on for this
                               long before the listener closes (default 5s, 0: at once)
  BLUEGREEN_LOG_FORMAT/LEVEL   auto|json|text / debug|info|warn|error (default auto/info)
  BLUEGREEN_ACCESS_LOG         one JSON line per request (default false)
  BLUEGREEN_PREVIEW            route preview requests to the idle colour (default true)
  BLUEGREEN_PREVIEW_HEADER     preview header (default X-Bluegreen-Preview)
  BLUEGREEN_PREVIEW_COOKIE     preview cookie (default bluegreen_preview)
  BLUEGREEN_BALANCE            round-robin|least-inflight (default round-robin)
  BLUEGREEN_UPSTREAM_IDLE_TIMEOUT  idle upstream connections are closed after this (default 30s)
  BLUEGREEN_UPSTREAM_TIMEOUT   limit on an instance's time to answer (head of the response; 504 after it), to take the next byte of a request body (504) and to send the next byte of an answer's body (cut; event streams exempt) (default 60s, 0: none)
  BLUEGREEN_CLIENT_BODY_TIMEOUT  most time between two reads of a request body; 408 after it (default 60s)
  BLUEGREEN_CLIENT_SEND_TIMEOUT  most time a client may take no byte of its answer; its connection is cut after it (default 60s)
  BLUEGREEN_REPLICA_ID         name shown in status (default the host name)
  BLUEGREEN_OUTLIER_CONSECUTIVE / _EJECT  passive ejection after N failures, cool-down (default 5 / 30s)
  BLUEGREEN_TRUSTED_PROXIES    CIDRs whose X-Forwarded-* headers are kept (default none)
  BLUEGREEN_PREVIEW_STRIP      remove the preview header before forwarding (default true)
  BLUEGREEN_PREVIEW_FROM       peers whose preview requests are honoured: private, any, or CIDRs (default private)
  BLUEGREEN_READ_HEADER_TIMEOUT  time a client gets to send its headers (default 10s)
  BLUEGREEN_PPROF              Go profiles under /debug/pprof/ on the admin listener, token
                               required: needs BLUEGREEN_ADMIN_TOKEN[_FILE] (default false)
  BLUEGREEN_FAST_PATH            built-in HTTP/1.1 fast path for plain requests (default true)
  BLUEGREEN_ETCD_*             CA_FILE, CERT_FILE, KEY_FILE, USERNAME, PASSWORD[_FILE],
                               TIMEOUT (2s), LEASE_TTL (5s), START_WAIT (30s) for an etcd:// store
  BLUEGREEN_STATE_CACHE        a fleet replica's copy of its state, to start while etcd is
                               away (default ./bluegreen-state-cache.json; off: none)
  BLUEGREEN_STATE_MIGRATE_FROM file:PATH of a single proxy's state, copied into an empty etcd

SIGTERM, SIGINT or SIGQUIT stops gracefully (see BLUEGREEN_SHUTDOWN_DELAY
and BLUEGREEN_DRAIN_TIMEOUT); a second signal stops at once. SIGHUP reloads
the TLS certificate files; SIGUSR1, SIGUSR2 and SIGPIPE stop nothing.

Exit status: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad
configuration or an unreadable state file.
`

func runServe(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		fmt.Fprint(stdout, serveUsage)
		return exitOK
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "bluegreen: serve takes no arguments, got %q\n", args)
		return exitConfig
	}
	cfg, err := loadConfig(environ, os.Hostname)
	if err != nil {
		printConfigErrors(stderr, err)
		return exitConfig
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	defer routeStdLog(log, time.Now)()
	return exitCode(serve(ctx, cfg, log, versionString(), nil), stderr)
}

// printConfigErrors writes each configuration problem (one a line, each
// naming its variable) to stderr.
func printConfigErrors(stderr io.Writer, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(stderr, "bluegreen: config: %s\n", line)
	}
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "bluegreen: %v\n", err)
	var se startupError
	if errors.As(err, &se) {
		return exitConfig
	}
	return exitFailure
}
