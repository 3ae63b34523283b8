package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
)

const demoUsage = `Usage: bluegreen demo

Runs the proxy on :8080 (admin on 127.0.0.1:8081) in front of two demo apps,
blue v1 and green v2, all in one process, with a fresh state in a temporary
directory. BLUEGREEN_* variables still apply (for example BLUEGREEN_LISTEN).
Stop it with Ctrl-C.
`

// demoApp is one in-process demo application on a loopback port.
type demoApp struct {
	app *app.App
	srv *http.Server
	url string
}

func startDemoApp(color, version string, log *slog.Logger) (*demoApp, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo app %s: %w", color, err)
	}
	a := app.New(app.Config{Color: color, Version: version}, log.With("app", color))
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second}
	srv.RegisterOnShutdown(a.CloseStreams)
	go func() { _ = srv.Serve(ln) }()
	return &demoApp{app: a, srv: srv, url: "http://" + ln.Addr().String()}, nil
}

func runDemo(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		fmt.Fprint(stdout, demoUsage)
		return exitOK
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "bluegreen: demo takes no arguments, got %q\n", args)
		return exitConfig
	}
	dir, err := os.MkdirTemp("", "bluegreen-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "bluegreen: demo: %v\n", err)
		return exitFailure
	}
	defer os.RemoveAll(dir)

	bootLog := newLogger(stderr, "auto", "info")
	blue, err := startDemoApp("blue", "v1", bootLog)
	if err != nil {
		fmt.Fprintf(stderr, "bluegreen: %v\n", err)
		return exitFailure
	}
	green, err := startDemoApp("green", "v2", bootLog)
	if err != nil {
		fmt.Fprintf(stderr, "bluegreen: %v\n", err)
		return exitFailure
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = blue.srv.Shutdown(sctx)
		_ = green.srv.Shutdown(sctx)
	}()

	// Demo defaults first; the user's own BLUEGREEN_* variables win.
	demoEnv := []string{
		envPrefix + "BLUE_URLS=" + blue.url,
		envPrefix + "GREEN_URLS=" + green.url,
		envPrefix + "STATE=file:" + filepath.Join(dir, "state.json"),
		envPrefix + "HEALTH_INTERVAL=1s",
		envPrefix + "ROLLBACK_WINDOW=2m",
		envPrefix + "DRAIN_TIMEOUT=5s",
		envPrefix + "SHUTDOWN_DELAY=0s", // nothing balances in front of the demo: Ctrl-C stops at once
	}
	var own []string
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); k == envPrefix+"BLUE_URLS" || k == envPrefix+"GREEN_URLS" || k == envPrefix+"STATE" {
			continue // the demo owns these
		}
		own = append(own, kv)
	}
	cfg, err := loadConfig(append(demoEnv, own...), os.Hostname)
	if err != nil {
		printConfigErrors(stderr, err)
		return exitConfig
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	defer routeStdLog(log, time.Now)()
	err = serve(ctx, cfg, log, versionString(), func(a addrs) {
		fmt.Fprint(stdout, demoBanner(a, blue.url, green.url))
	})
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return exitCode(err, stderr)
}

func demoBanner(a addrs, blueURL, greenURL string) string {
	pub := hostPort(a.public)
	adm := hostPort(a.admin)
	return fmt.Sprintf(`
bluegreen demo is running
  proxy  http://%[1]s   (live traffic: blue v1)
  admin  http://%[2]s   (status page: open it in a browser)
  blue   %[3]s   green  %[4]s

Try these in another terminal:
  curl http://%[1]s/                                  # answered by the active colour
  curl -X POST http://%[2]s/admin/cutover             # switch live traffic to green
  curl http://%[2]s/admin/status                      # active colour, health of every instance

More: curl -H 'X-Bluegreen-Preview: 1' http://%[1]s/ previews the idle colour;
curl -X POST -d '{"to":"green","steps":[10,50,100],"step_interval":"20s","min_requests":20}' http://%[2]s/admin/rollout
shifts clients to green in steps (watch it on the status page);
curl -X POST %[4]s/health/fail breaks green: after a cutover the proxy rolls back by itself.
Ctrl-C stops the demo.

`, pub, adm, blueURL, greenURL)
}

// hostPort makes a listener address printable as a URL host: an unspecified
// host becomes localhost.
func hostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
