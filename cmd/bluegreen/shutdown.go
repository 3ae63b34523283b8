package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cryoprotect/bluegreen/proxy"
	"github.com/cryoprotect/bluegreen/state"
)

// The graceful stop runs in two phases. On the first SIGTERM (or SIGINT,
// or SIGQUIT) /readyz answers 503 at once while both listeners keep
// serving everything for BLUEGREEN_SHUTDOWN_DELAY, so a load balancer that
// checks /readyz stops sending new connections before any is refused.
// Then the public listener stops accepting, each keep-alive connection is
// closed after its current response (which says Connection: close), idle
// ones are closed, long-lived connections are ended and requests in flight
// finish within BLUEGREEN_DRAIN_TIMEOUT. A second signal ends whatever
// phase is running and stops at once.

// hardStopKey carries, in the context given to serve, the channel closed
// when the stop must happen at once.
type hardStopKey struct{}

// withHardStop returns ctx carrying hard: serve's graceful stop begins when
// ctx ends and is cut short when hard is closed.
func withHardStop(ctx context.Context, hard <-chan struct{}) context.Context {
	return context.WithValue(ctx, hardStopKey{}, hard)
}

// hardStopOf returns the channel set by withHardStop; nil (never) without one.
func hardStopOf(ctx context.Context) <-chan struct{} {
	hard, _ := ctx.Value(hardStopKey{}).(<-chan struct{})
	return hard
}

// nonStopKey carries, in the context given to serve, the channel of the
// signals that stop nothing: SIGHUP and ignoredSignals.
type nonStopKey struct{}

// nonStopOf returns that channel, set by notifyStop; nil (never) without
// one, as for a serve called in a test's process.
func nonStopOf(ctx context.Context) <-chan os.Signal {
	c, _ := ctx.Value(nonStopKey{}).(<-chan os.Signal)
	return c
}

// notifyStop returns a context that ends at the first SIGTERM, SIGINT or
// SIGQUIT (nginx's graceful stop, which Go would answer with a stack dump
// and an exit at once) and carries (see withHardStop) a channel closed at
// the second one, and the channel of SIGHUP (nonStopOf), which stops nothing:
// a closing terminal sends it, and so does an operator used to nginx's
// reload, and Go's default would end the process at once; so does Go's
// default for SIGUSR1 and SIGUSR2 (ignoredSignals), so they come on the
// same channel and stop nothing either. SIGPIPE is
// taken too, and dropped: Go's default ends the process at its first
// write to a standard output or error that nobody reads any more (the
// log's reader exited: a pipe into a shipper, a restarted journald), and
// a proxy must go on serving with its log lost; the write fails instead.
// stop releases the signals; call it when done.
func notifyStop(parent context.Context) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGQUIT)
	nonStop := make(chan os.Signal, 1)
	signal.Notify(nonStop, append([]os.Signal{syscall.SIGHUP}, ignoredSignals...)...)
	pipe := make(chan os.Signal, 1) // never read: Notify drops what does not fit
	signal.Notify(pipe, syscall.SIGPIPE)
	parent = context.WithValue(parent, nonStopKey{}, (<-chan os.Signal)(nonStop))
	graceful, cancel := context.WithCancel(parent)
	hard := make(chan struct{})
	done := make(chan struct{})
	go func() {
		for n := 0; ; {
			select {
			case <-sigs:
				if n++; n == 1 {
					cancel()
					continue
				}
				close(hard)
				return
			case <-done:
				return
			}
		}
	}()
	return withHardStop(graceful, hard), func() {
		signal.Stop(sigs)
		signal.Stop(nonStop)
		signal.Stop(pipe)
		close(done)
		cancel()
	}
}

// shutdown is serve's graceful stop (see above).
type shutdown struct {
	delay, drain time.Duration
	hard         <-chan struct{} // closed: stop at once
	log          *slog.Logger
	notReady     func() // turns /readyz to 503
	router       *proxy.Router
	pub          *proxy.Server // its EndKeepAlives also ends net/http's (EndKeepAlivesHandler)
	plain        publicServer  // what serves the plain listener: pub, or net/http (tls.go)
	edge         *tlsEdge      // the TLS listener; nil when off
	adm          *http.Server
}

// run stops serving. failed is true when a listener failed (nothing to
// wait for: the delay is skipped).
func (s shutdown) run(failed bool) {
	start := time.Now()
	s.notReady()
	// Busy keep-alive connections end with their next response, so their
	// clients reconnect through the load balancer, which stops choosing
	// this replica within the delay.
	s.pub.EndKeepAlives()
	if s.delay > 0 && !failed {
		s.log.Info("shutting down: /readyz answers 503; still serving for the shutdown delay",
			"shutdown_delay", s.delay.String(), "drain_timeout", s.drain.String())
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case <-s.hard:
			t.Stop()
			s.now("second signal during the shutdown delay")
			return
		}
	}
	s.log.Info("shutting down: no new connections; closing keep-alive connections after their current response",
		"drain_timeout", s.drain.String())
	// Long-lived connections never finish by themselves: they are ended
	// now (WebSockets with close 1001 at a frame boundary, streams with
	// their last chunk), so their clients reconnect elsewhere.
	ctx, cancel := s.bounded(s.drain)
	defer cancel()
	if n := s.router.CloseStreams(); n > 0 {
		s.log.Info("ended long-lived connections", "connections", n)
		// They have got their close frame or last chunk; wait a moment for
		// the clients to take it, not for the whole drain timeout.
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		s.waitStreams(wctx)
		wcancel()
	}
	tlsStopped := s.edge.shutdown(ctx) // at the same time as the plain listener
	if err := s.plain.Shutdown(ctx); err != nil {
		select {
		case <-s.hard:
			s.log.Warn("second signal: cutting the requests still running")
		default:
			s.log.Warn("requests still running at the end of the drain timeout were cut", "err", err)
		}
		s.plain.Close()
	}
	tlsStopped()
	actx, acancel := s.bounded(2 * time.Second)
	defer acancel()
	if err := s.adm.Shutdown(actx); err != nil {
		s.adm.Close()
	}
	s.log.Info("shut down", "took", time.Since(start).Round(time.Millisecond).String())
}

// waitStreams waits until the ended long-lived connections are gone (an
// upgraded connection is not a request Shutdown waits for), or ctx ends.
func (s shutdown) waitStreams(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		open := 0
		for _, c := range colors {
			n, _ := s.router.Streams(c)
			open += n
		}
		if open == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// bounded returns a context that ends after d or at a second signal.
func (s shutdown) bounded(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-s.hard:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// now closes everything at once.
func (s shutdown) now(why string) {
	s.log.Warn("stopping at once: " + why)
	s.router.CloseStreams()
	s.plain.Close()
	s.edge.close()
	s.adm.Close()
}

// removeStaleState removes the temporary files a crash left next to a file
// store's state file, and logs each.
func removeStaleState(store state.Store, log *slog.Logger) error {
	fs, ok := store.(*state.FileStore)
	if !ok {
		return nil
	}
	removed, err := fs.RemoveStaleTemps()
	for _, p := range removed {
		log.Warn("removed a stale temporary state file left by an interrupted write", "file", p)
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// validateShutdown checks the shutdown variables (called by loadConfig).
func validateShutdown(cfg Config, bad func(name, value, expected string)) {
	if cfg.ShutdownDelay < 0 {
		bad("SHUTDOWN_DELAY", cfg.ShutdownDelay.String(), "expected a duration of at least 0 such as 5s (0: stop accepting at once)")
	}
}

// onNonStop answers the signals that stop nothing until ctx ends. On
// SIGHUP the TLS listener's certificate files are read again
// (edge.reload); without one there is nothing to reload (the configuration
// is read at start) and it is only logged. The others are logged as
// ignored.
func onNonStop(ctx context.Context, sigs <-chan os.Signal, edge *tlsEdge, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				log.Info("signal ignored: the log goes to standard error, with no file to reopen, and a new version is a new process; SIGHUP reloads the TLS certificate, SIGTERM stops",
					"signal", signalName(sig))
				continue
			}
			if edge == nil {
				log.Info("SIGHUP: nothing to reload; the configuration is read at start (restart to change it), SIGTERM stops")
				continue
			}
			edge.reload()
		}
	}
}
