// Command demo-app is a tiny HTTP application that plays one colour, blue or
// green, of a blue/green deployment in demos, compose files and tests.
//
// Environment:
//
//	DEPLOYMENT_COLOR  colour to play: letters, digits and '-' (default blue)
//	APP_VERSION       version to report (default dev)
//	PORT              TCP port to listen on, 0 picks a free one (default 5000)
//	LISTEN_ADDR       host or IP address to listen on (default all interfaces)
//	START_UNHEALTHY   true: /health fails until POST /health/recover (default false)
//
// Usage:
//
//	demo-app               serve until SIGINT or SIGTERM
//	demo-app -healthcheck  GET /health of the running app; exit 0 if it passes, else 1
//	demo-app healthcheck   the same, for a Docker HEALTHCHECK in an image without a shell
//	demo-app -version      print the version
//
// Bad flags or environment values exit with status 2 and one line naming them.
// See package app for the routes.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
)

const (
	shutdownTimeout    = 10 * time.Second
	healthcheckTimeout = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-app:", err)
	}
	os.Exit(exitStatus(err))
}

// errUsage marks a bad command line.
var errUsage = errors.New("usage")

// errUnhealthy marks every failure of a health check.
var errUnhealthy = errors.New("unhealthy")

// envError is a bad value of an environment variable.
type envError struct {
	name, value, want string
}

func (e *envError) Error() string {
	return fmt.Sprintf("invalid %s=%q: want %s", e.name, e.value, e.want)
}

// exitStatus maps an error of run to the exit status of the process: 0 for
// nil, 1 for a failed health check (Docker reserves 2 there), 2 for bad flags
// or environment, 1 otherwise.
func exitStatus(err error) int {
	var envErr *envError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUnhealthy):
		return 1
	case errors.Is(err, errUsage), errors.As(err, &envErr):
		return 2
	default:
		return 1
	}
}

// config is what the environment sets.
type config struct {
	color, version string
	host, port     string
	unhealthy      bool
}

// addr is the address to listen on.
func (c config) addr() string { return net.JoinHostPort(c.host, c.port) }

// loadConfig reads the environment through getenv; an empty value counts as
// unset.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		color:   cmp.Or(getenv("DEPLOYMENT_COLOR"), app.DefaultColor),
		version: cmp.Or(getenv("APP_VERSION"), app.DefaultVersion),
		host:    strings.TrimSuffix(strings.TrimPrefix(getenv("LISTEN_ADDR"), "["), "]"),
		port:    cmp.Or(getenv("PORT"), "5000"),
	}
	if !validColor(c.color) {
		return c, &envError{"DEPLOYMENT_COLOR", c.color, "at most 63 letters, digits or '-'"}
	}
	if n, err := strconv.Atoi(c.port); err != nil || n < 0 || n > 65535 {
		return c, &envError{"PORT", c.port, "a TCP port number from 0 to 65535"}
	}
	if c.host != "" && net.ParseIP(c.host) == nil && strings.ContainsAny(c.host, ":/ \t[]") {
		return c, &envError{"LISTEN_ADDR", getenv("LISTEN_ADDR"), "a host name or IP address without port"}
	}
	if s := getenv("START_UNHEALTHY"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return c, &envError{"START_UNHEALTHY", s, "true or false"}
		}
		c.unhealthy = b
	}
	return c, nil
}

// validColor reports whether s is a usable colour name: 1 to 63 ASCII
// letters, digits or '-', so it fits a header value, a log field and a
// host-name label.
func validColor(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-':
		default:
			return false
		}
	}
	return true
}

// run is the whole program: it parses args (without the program name) and the
// environment read through getenv, then serves until ctx ends, shuts down
// gracefully and returns nil. When ready is not nil, it is called with the
// bound address once the listener is open. Logs go to stderr as JSON; the
// output of -version and -help goes to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("demo-app", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and reported once, by main
	healthcheck := fs.Bool("healthcheck", false, "GET /health of the running app and exit 0 if it passes, else 1")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: demo-app [-healthcheck | -version | healthcheck]")
			fs.PrintDefaults()
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case fs.NArg() == 1 && fs.Arg(0) == "healthcheck":
		*healthcheck = true
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}

	if *version {
		fmt.Fprintf(stdout, "demo-app %s %s\n", cmp.Or(getenv("APP_VERSION"), app.DefaultVersion), runtime.Version())
		return nil
	}
	cfg, err := loadConfig(getenv)
	if *healthcheck {
		if err == nil {
			err = checkHealth(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errUnhealthy, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	return serve(ctx, cfg, slog.New(slog.NewJSONHandler(stderr, nil)), ready)
}

// serve runs the app on cfg's address until ctx ends.
func serve(ctx context.Context, cfg config, log *slog.Logger, ready func(addr string)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.addr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}

	a := app.New(app.Config{Color: cfg.color, Version: cfg.version}, log)
	if cfg.unhealthy {
		a.SetHealthy(false)
	}
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Shutdown neither waits for nor ends WebSockets and event streams.
	srv.RegisterOnShutdown(a.CloseStreams)

	log.Info("listening", "addr", ln.Addr().String(), "color", cfg.color, "version", cfg.version, "healthy", a.Healthy())
	if ready != nil {
		ready(ln.Addr().String())
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// checkHealth GETs /health of the app that cfg describes, on loopback unless
// LISTEN_ADDR names a specific address, and returns nil when it answers 200.
func checkHealth(ctx context.Context, cfg config) error {
	if cfg.port == "0" {
		return errors.New("PORT=0: the health check needs the port the app listens on")
	}
	host := cfg.host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, cfg.port) + "/health"

	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
