package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/proxy"
	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

var colors = [2]string{"blue", "green"}

// startupError is a problem with the configuration or the stored state: the
// process exits 2 with its message.
type startupError struct{ err error }

func (e startupError) Error() string { return e.err.Error() }
func (e startupError) Unwrap() error { return e.err }

// checkers is the health of both colours as the control plane sees it.
type checkers map[string]*health.Checker

func (c checkers) Healthy(color string) int {
	if ch := c[color]; ch != nil {
		return ch.Healthy()
	}
	return 0
}

func (c checkers) Instances(color string) []health.InstanceStatus {
	if ch := c[color]; ch != nil {
		return ch.Status()
	}
	return nil
}

func (c checkers) probed() bool {
	for _, ch := range c {
		if !ch.Ready() {
			return false
		}
	}
	return true
}

// addrs are the bound listener addresses, reported once serving starts.
type addrs struct{ public, admin, tls string }

// serve runs the proxy until ctx ends, then shuts down gracefully. ready,
// when set, is called with the bound addresses once both listeners accept.
func serve(ctx context.Context, cfg Config, log *slog.Logger, version string, ready func(addrs)) error {
	store, fleet, err := openStore(ctx, cfg, log)
	if err != nil {
		return startupError{fmt.Errorf("%sSTATE=%q: %w", envPrefix, cfg.State, err)}
	}
	defer store.Close()
	if err := removeStaleState(store, log); err != nil {
		return startupError{err}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pm, err := proxy.NewMetrics(reg)
	if err != nil {
		return err
	}
	hm, err := health.NewMetrics(reg)
	if err != nil {
		return err
	}
	rm, err := rollout.NewMetrics(reg)
	if err != nil {
		return err
	}
	// In a fleet (etcd store) one elected replica runs auto-rollback.
	if err := fleet.register(reg); err != nil {
		return err
	}

	var accessLog *slog.Logger
	if cfg.AccessLog {
		accessLog = log.With("log", "access")
	}
	pcfg := proxy.Config{
		Colors:       [2]proxy.ColorConfig{{Name: colors[0], URLs: cfg.blue}, {Name: colors[1], URLs: cfg.green}},
		Balance:      cfg.balance,
		DrainTimeout: cfg.DrainTimeout,
		RetryAfter:   cfg.HealthInterval,
		Upstream:     proxy.TransportConfig{IdleConnTimeout: cfg.UpstreamIdleTimeout, ResponseHeaderTimeout: cfg.UpstreamTimeout, MaxIdleConnsPerHost: cfg.upstreamMaxConns},
		Metrics:      pm,
		Log:          log,
		AccessLog:    accessLog,
		Stats:        stats.New(colors[:], time.Now),
		RolloutKey:   cfg.rolloutKey(),
	}
	traffic := pcfg.Stats
	pcfg.Outlier = proxy.OutlierConfig{Consecutive: cfg.OutlierConsecutive, Eject: cfg.OutlierEject}
	pcfg.TrustedProxies, pcfg.StripPreviewHeader, pcfg.PreviewFrom = cfg.trusted, cfg.PreviewStrip, cfg.previewFrom
	pcfg.ClientBodyTimeout = cfg.ClientBodyTimeout
	pcfg.ClientSendTimeout = cfg.ClientSendTimeout
	pcfg.NetHTTPOnly = !cfg.FastPath
	if cfg.Preview {
		pcfg.PreviewHeader, pcfg.PreviewCookie = cfg.PreviewHeader, cfg.PreviewCookie
	}
	// The data plane's evidence that the new colour is gone rolls back at
	// once (rollout/evidence.go); ctl is set before traffic flows.
	var ctl *rollout.Controller
	pcfg.ColorFailing = func(color, reason string) { ctl.DataPlaneEvidence(color, reason) }
	router, err := proxy.NewRouter(pcfg)
	if err != nil {
		return startupError{err}
	}

	// The controller learns of health changes through the same reporter
	// that marks instances up and down in the pools.
	hcfg := health.Config{Path: cfg.HealthPath, Interval: cfg.HealthInterval, Timeout: cfg.HealthTimeout, Rise: cfg.HealthRise, Fall: cfg.HealthFall, Version: cfg.versionSource()}
	probeClient := &http.Client{Transport: proxy.NewTransport(proxy.TransportConfig{MaxIdleConnsPerHost: 2})}
	hv := checkers{}
	for i, urls := range [2][]*url.URL{cfg.blue, cfg.green} {
		pool := router.Pool(colors[i])
		rep := health.ReporterFunc(func(instance string, up bool) {
			pool.SetStatus(instance, up)
			ctl.HealthChanged()
		})
		hv[colors[i]] = health.NewChecker(colors[i], urls, hcfg, probeClient, rep, hm, log, time.Now)
	}
	ctl, err = rollout.New(rollout.Config{
		Colors: colors, InitialColor: cfg.InitialColor,
		AutoRollback: cfg.AutoRollback, Window: cfg.RollbackWindow,
		Leadership: fleet.leadership(),
		Stats:      rollout.RecorderStats{R: pcfg.Stats}, AnalysisEvery: cfg.RolloutAnalysisInterval,
		Fleet: fleet.counts, Replica: cfg.ReplicaID, HoldAfter: cfg.EtcdLeaseTTL,
	}, store, router, hv, rm, log, time.Now)
	if err != nil {
		return startupError{err}
	}
	if err := fleet.start(ctx, ctl.Init, log); err != nil {
		if errors.Is(err, state.ErrCorrupt) {
			// What the operator can do, since the proxy will not guess.
			err = startupError{fmt.Errorf("%w; mend it, restore it from a backup, or move it away to start afresh at %sINITIAL_COLOR without its history", err, envPrefix)}
		}
		return err
	}

	pubLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("public listener %sLISTEN=%q: %w", envPrefix, cfg.Listen, err)
	}
	admLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pubLn.Close()
		return fmt.Errorf("admin listener %sADMIN_LISTEN=%q: %w", envPrefix, cfg.AdminListen, err)
	}

	var stopping atomic.Bool
	readiness := func() (bool, string) {
		switch {
		case stopping.Load():
			return false, "shutting down"
		case !hv.probed():
			return false, "first health checks still running"
		}
		active, _ := router.Active()
		if hv.Healthy(active) == 0 {
			return false, "active colour " + active + " has no healthy instance"
		}
		return true, ""
	}
	admHandler := admin.New(admin.Config{
		Token: cfg.token, Controller: ctl, Rollouts: ctl, Health: withEjections{hv, router}, Colors: colors,
		Applied: router.Active, Ready: readiness, Gatherer: reg, Log: log,
		Replica: cfg.ReplicaID, Version: version, Store: fleet.status,
		Pprof: cfg.Pprof, Stats: traffic, LoopbackOnly: admin.LoopbackHost(cfg.AdminListen),
	})
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	pub := &proxy.Server{
		Router: router,
		Fallback: &http.Server{
			Handler:           nil, // set below: the router, ending keep-alives on request (shutdown.go)
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          errLog,
		},
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
	}
	pub.Fallback.Handler = pub.EndKeepAlivesHandler(router)
	adm := &http.Server{Handler: admHandler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second, ErrorLog: errLog}
	// nil unless BLUEGREEN_TLS_LISTEN is set; its answers end keep-alives
	// at shutdown like the plain listener's (on HTTP/2: GOAWAY).
	edge, err := newTLSEdge(cfg, log, reg, pub, pubLn, store)
	if err != nil {
		pubLn.Close()
		admLn.Close()
		return err
	}
	pubSrv := edge.public(pub)

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, ch := range hv {
		wg.Go(func() { ch.Run(bg) })
	}
	wg.Go(func() { ctl.Run(bg) })
	if fleet.elect != nil {
		wg.Go(func() { fleet.elect(bg, cfg.ReplicaID, cfg.etcd.ttl, ctl.LeaderChanged) })
	}

	serveErr := make(chan error, 3)
	go func() { serveErr <- pubSrv.Serve(pubLn) }()
	go func() { serveErr <- adm.Serve(admLn) }()
	edge.start(bg, &wg, serveErr)
	wg.Go(func() { onNonStop(bg, nonStopOf(ctx), edge, log) })
	active, gen := router.Active()
	log.Info("bluegreen serving", "listen", pubLn.Addr().String(), "admin", admLn.Addr().String(),
		"tls", edge.addr(), "active", active, "generation", gen, "version", version, "auth", cfg.token != "", "fast_path", router.FastPath())
	for _, u := range cfg.unknown {
		args := []any{"variable", u.name}
		if u.suggest != "" {
			args = append(args, "did_you_mean", u.suggest)
		}
		log.Warn("unknown variable ignored", args...)
	}
	if shared := cfg.sharedInstances(); len(shared) > 0 {
		log.Warn("instances listed in both colours: a switch does not change what serves them",
			"instances", shared, "variables", envPrefix+"BLUE_URLS, "+envPrefix+"GREEN_URLS")
	}
	lookup := cfg.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	names := &scaledNames{lookup: lookup, interval: time.Minute, log: log}
	wg.Go(func() { names.run(bg, slices.Concat(cfg.blue, cfg.green)) })
	if ready != nil {
		ready(addrs{public: pubLn.Addr().String(), admin: admLn.Addr().String(), tls: edge.addr()})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	}

	shutdown{
		delay: cfg.ShutdownDelay, drain: cfg.DrainTimeout, hard: hardStopOf(ctx), log: log,
		notReady: func() { stopping.Store(true) }, router: router, pub: pub, plain: pubSrv, edge: edge, adm: adm,
	}.run(runErr != nil)
	stopBG()
	wg.Wait()
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return runErr
	}
	log.Info("stopped")
	return nil
}
