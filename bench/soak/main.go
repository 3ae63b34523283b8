//go:build linux

// Command soak is a bounded soak test of bluegreen: it runs the real proxy
// binary in front of four demo-app processes (two per colour) for a fixed
// time under keep-alive load, while cutting over at random through the admin
// API and killing and restarting one instance at a time, and reports the
// proxy's resident memory, goroutines and open file descriptors at rest
// before and after, and their maximum under load.
//
//	go run ./bench/soak [-duration 10m] [-clients 32] [-out FILE] [-seed N]
//
// Exit status: 0 when every GET succeeded and the proxy's goroutines and
// open fds at rest came back within the tolerance of the start; 1 when not;
// 2 when the soak could not run (build, start-up); 130 after SIGINT/SIGTERM.
// POST failures are reported but not fatal: the proxy does not retry a
// request whose body it sent, so a POST on an instance that is killed fails.
//
// Linux only (process groups, parent-death signal, /proc for the machine).
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
)

// Chaos schedule: uniform random intervals drawn from the seeded source.
const (
	cutoverMin, cutoverMax = 1 * time.Second, 5 * time.Second  // between two cutovers
	killMin, killMax       = 5 * time.Second, 15 * time.Second // between two kills
	downMin, downMax       = 1 * time.Second, 4 * time.Second  // a killed instance stays down
	postPercent            = 10                                // share of POST requests
	sampleEvery            = 2 * time.Second                   // /metrics while loaded
	healthInterval         = 200 * time.Millisecond            // BLUEGREEN_HEALTH_INTERVAL
	upstreamIdle           = 2 * time.Second                   // BLUEGREEN_UPSTREAM_IDLE_TIMEOUT
	goroutineSlack         = 20                                // allowed growth at rest
	fdSlack                = 20
	maxBursts              = 200 // rows of failures kept for the report
)

type options struct {
	duration, warmup, settle time.Duration
	clients                  int
	out                      string
	seed                     uint64
	keep                     bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "load and chaos time")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "load without chaos before the start sample")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "quiet time before a sample at rest (must exceed the 2s upstream idle timeout)")
	flag.IntVar(&o.clients, "clients", 32, "keep-alive client goroutines")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the chaos schedule and the load mix (0: from the clock)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs, state file)")
	flag.Parse()
	if flag.NArg() > 0 || o.duration <= 0 || o.warmup < 0 || o.settle <= upstreamIdle || o.clients < 1 {
		fmt.Fprintln(os.Stderr, "usage: soak [-duration 10m] [-clients 32] [-warmup 10s] [-settle 5s] [-seed N] [-out FILE] [-keep]")
		os.Exit(2)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o)
	stop()
	os.Exit(code)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[soak %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------- processes

// child is one process the soak started.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// procs starts processes and makes sure none outlives the soak.
type procs struct {
	mu   sync.Mutex
	live map[*child]bool
}

func (p *procs) start(name, bin string, env []string, logPath string) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child has its own copy
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group: a terminal's Ctrl-C reaches the soak only, which
	// then stops everything in order. Pdeathsig: nothing survives a soak
	// that is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	p.mu.Lock()
	p.live[c] = true
	p.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		p.mu.Lock()
		delete(p.live, c)
		p.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// terminate sends SIGTERM, waits up to grace, then SIGKILL. It returns how
// long the process took and its exit error (nil for status 0).
func (c *child) terminate(grace time.Duration) (time.Duration, error) {
	t := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.kill()
	}
	return time.Since(t), c.err
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stopAll ends every process still running, in parallel.
func (p *procs) stopAll() {
	p.mu.Lock()
	cs := make([]*child, 0, len(p.live))
	for c := range p.live {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.terminate(10 * time.Second) })
	}
	wg.Wait()
}

// instance is one demo-app process of a colour, always on the same port.
type instance struct {
	color   string
	index   int
	port    int
	url     string
	version string
	c       *child
}

func (in *instance) name() string { return fmt.Sprintf("%s-%d", in.color, in.index) }

// ---------------------------------------------------------------- load

// methodStats counts one method's requests.
type methodStats struct {
	requests, failures atomic.Int64
	mu                 sync.Mutex
	statuses           map[string]int64 // "200", "405", "502", "error: EOF" ...
}

func (m *methodStats) record(key string) {
	m.mu.Lock()
	m.statuses[key]++
	m.mu.Unlock()
}

// failure is one failed request.
type failure struct {
	method string
	what   string // status line or transport error
	color  string // X-Deployment-Color of the answer, if any
	body   string
}

// burst is a run of identical failures, none more than burstGap after the
// previous one.
type burst struct {
	failure
	first, last time.Duration
	n           int64
}

const burstGap = time.Second

// stats is what the load goroutines and the chaos loop record.
type stats struct {
	t0      time.Time
	get     methodStats
	post    methodStats
	byColor sync.Map // colour -> *atomic.Int64
	mu      sync.Mutex
	bursts  []burst
	dropped int64 // failures beyond maxBursts
	events  []event
}

type event struct {
	at   time.Duration
	what string
}

func newStats() *stats {
	s := &stats{t0: time.Now()}
	s.get.statuses = map[string]int64{}
	s.post.statuses = map[string]int64{}
	return s
}

func (s *stats) since() time.Duration { return time.Since(s.t0).Truncate(time.Millisecond) }

func (s *stats) event(format string, args ...any) {
	s.eventAt(s.since(), format, args...)
}

// eventAt records an event that happened at a time taken earlier.
func (s *stats) eventAt(at time.Duration, format string, args ...any) {
	e := event{at: at, what: fmt.Sprintf(format, args...)}
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *stats) fail(f failure) {
	at := s.since()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.bursts {
		b := &s.bursts[i]
		if b.failure == f && at-b.last <= burstGap {
			b.last, b.n = max(b.last, at), b.n+1
			return
		}
	}
	if len(s.bursts) == maxBursts {
		s.dropped++
		return
	}
	s.bursts = append(s.bursts, burst{failure: f, first: at, last: at, n: 1})
}

func (s *stats) countColor(c string) {
	if c == "" {
		c = "(none)"
	}
	v, _ := s.byColor.LoadOrStore(c, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// loader runs the client goroutines until stop is closed.
type loader struct {
	client  *http.Client
	target  string
	seed    uint64
	clients int
	st      *stats
}

func (l *loader) run(stop <-chan struct{}, id int) {
	rng := rand.New(rand.NewPCG(l.seed, uint64(id)+1))
	body := make([]byte, 512)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		method, ms := http.MethodGet, &l.st.get
		var rd io.Reader
		if rng.IntN(100) < postPercent {
			method, ms = http.MethodPost, &l.st.post
			rd = bytes.NewReader(body[:16+rng.IntN(len(body)-16)])
		}
		req, err := http.NewRequest(method, fmt.Sprintf("%s/soak/%d/%d", l.target, id, n), rd)
		if err != nil {
			panic(err) // a bad URL is a bug here
		}
		if rd != nil {
			req.Header.Set("Content-Type", "text/plain")
		}
		ms.requests.Add(1)
		res, err := l.client.Do(req)
		if err != nil {
			what := err.Error()
			if ue, ok := errors.AsType[*url.Error](err); ok {
				what = ue.Err.Error()
			}
			ms.failures.Add(1)
			ms.record("error: " + what)
			l.st.fail(failure{method: method, what: what})
			continue
		}
		b, rerr := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		color := res.Header.Get("X-Deployment-Color")
		switch {
		case rerr != nil:
			ms.failures.Add(1)
			ms.record("error reading body: " + rerr.Error())
			l.st.fail(failure{method: method, what: res.Status + ", then " + rerr.Error(), color: color})
		case res.StatusCode >= 500:
			ms.failures.Add(1)
			ms.record(strconv.Itoa(res.StatusCode))
			l.st.fail(failure{method: method, what: res.Status, color: color, body: strings.TrimSpace(string(b))})
		default:
			ms.record(strconv.Itoa(res.StatusCode))
			l.st.countColor(color)
		}
	}
}

// phase runs the load until ctx ends or d has passed, and during, when not
// nil, alongside; it reports whether it ran to the end. during is stopped
// first and the load goes on until it has returned, so the chaos's clean-up
// (bringing a killed instance back) happens under load too.
func (l *loader) phase(ctx context.Context, d time.Duration, during func(stop <-chan struct{})) bool {
	stopLoad, stopSide := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for id := range l.clients {
		wg.Go(func() { l.run(stopLoad, id) })
	}
	var side sync.WaitGroup
	if during != nil {
		side.Go(func() { during(stopSide) })
	}
	ok := true
	select {
	case <-time.After(d):
	case <-ctx.Done():
		ok = false
	}
	close(stopSide)
	side.Wait()
	close(stopLoad)
	wg.Wait()
	return ok
}

// ---------------------------------------------------------------- admin API

// newAdminClient is the admin API's client of the soak: one attempt per
// call (no retries), so a failed call is reported as it happened.
func newAdminClient(adminAddr, token string) *adminclient.Client {
	return adminclient.New(&url.URL{Scheme: "http", Host: adminAddr}, token, adminclient.Options{RequestTimeout: 5 * time.Second})
}

// instances maps instance URL to its status.
func instances(st admin.Status) map[string]health.InstanceStatus {
	m := map[string]health.InstanceStatus{}
	for _, c := range st.Colors {
		for _, in := range c.Instances {
			m[in.URL] = in
		}
	}
	return m
}

// cutover asks for a switch to the colour to; it returns the HTTP status and
// the active colour the answer names.
func cutover(ctx context.Context, a *adminclient.Client, to string) (int, string, error) {
	st, _, err := a.Cutover(ctx, admin.SwitchRequest{To: to, Reason: "soak"})
	var ae *adminclient.APIError
	if errors.As(err, &ae) {
		return ae.Status, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	return http.StatusOK, st.Active, nil
}

// metrics is one scrape of /metrics: series ("name{labels}") to value.
type metrics map[string]float64

func scrape(ctx context.Context, a *adminclient.Client) (metrics, error) {
	b, err := a.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	return parseMetrics(b), nil
}

// parseMetrics reads the Prometheus text format (no timestamps expected).
func parseMetrics(b []byte) metrics {
	m := metrics{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// labels splits a series key into its name and labels.
func labels(series string) (string, map[string]string) {
	name, rest, ok := strings.Cut(series, "{")
	if !ok {
		return series, nil
	}
	ls := map[string]string{}
	rest = strings.TrimSuffix(rest, "}")
	for rest != "" {
		k, r, ok := strings.Cut(rest, "=\"")
		if !ok {
			break
		}
		var v strings.Builder
		i := 0
		for ; i < len(r) && r[i] != '"'; i++ {
			if r[i] == '\\' && i+1 < len(r) {
				i++
			}
			v.WriteByte(r[i])
		}
		ls[strings.TrimPrefix(k, ",")] = v.String()
		rest = strings.TrimPrefix(r[min(i+1, len(r)):], ",")
	}
	return name, ls
}

// sumBy sums the series of name grouped by the given labels, joined by "/".
func (m metrics) sumBy(name string, by ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		n, ls := labels(k)
		if n != name {
			continue
		}
		parts := make([]string, len(by))
		for i, l := range by {
			parts[i] = ls[l]
		}
		out[strings.Join(parts, "/")] += v
	}
	return out
}

// sample is the proxy process at one moment.
type sample struct {
	at              time.Duration
	rss, heap       float64
	goroutines, fds float64
}

func (m metrics) sample(at time.Duration) sample {
	return sample{
		at:         at,
		rss:        m["process_resident_memory_bytes"],
		heap:       m["go_memstats_heap_inuse_bytes"],
		goroutines: m["go_goroutines"],
		fds:        m["process_open_fds"],
	}
}

// ---------------------------------------------------------------- the soak

type soak struct {
	o       options
	dir     string
	procs   *procs
	st      *stats
	admin   *adminclient.Client
	demoBin string
	insts   []*instance
	rng     *rand.Rand

	cutovers     map[string]int // HTTP status of cutover calls
	kills        int
	restarts     int
	restartRetry int
	killedActive int
	siblingOut   int           // kills while the other instance of the colour was ejected
	chaosAt      time.Duration // when the chaos started, from the start of the warm-up
}

func run(ctx context.Context, o options) int {
	// fail reports why the soak cannot go on: exit 2, or 130 when it was
	// interrupted (then the error is only a consequence).
	fail := func(format string, args ...any) int {
		if ctx.Err() != nil {
			return interrupted()
		}
		logf(format, args...)
		return 2
	}
	dir, err := os.MkdirTemp("", "bluegreen-soak-")
	if err != nil {
		return fail("%v", err)
	}
	if o.keep {
		logf("temporary directory %s is kept", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	p := &procs{live: map[*child]bool{}}
	defer p.stopAll()

	s := &soak{o: o, dir: dir, procs: p, st: newStats(), cutovers: map[string]int{},
		rng: rand.New(rand.NewPCG(o.seed, 0x50a4))}
	logf("seed %d", o.seed)

	// Build both binaries from the module this is run in.
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return fail("cannot find the module root (run inside the repository): %v", err)
	}
	root := filepath.Dir(gomod)
	src := source(root)
	proxyBin, demoBin := filepath.Join(dir, "bluegreen"), filepath.Join(dir, "demo-app")
	for bin, pkg := range map[string]string{proxyBin: "./cmd/bluegreen", demoBin: "./cmd/demo-app"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fail("go build %s: %v", pkg, err)
		}
	}
	s.demoBin = demoBin
	logf("built bluegreen and demo-app in %s", dir)

	// Four demo-apps, two per colour, on fixed free ports.
	ports, err := freePorts(6)
	if err != nil {
		return fail("free ports: %v", err)
	}
	var blue, green []string
	for i, color := range []string{"blue", "blue", "green", "green"} {
		in := &instance{color: color, index: i % 2, port: ports[i], version: map[string]string{"blue": "v1", "green": "v2"}[color]}
		in.url = fmt.Sprintf("http://127.0.0.1:%d", in.port)
		if err := s.startInstance(ctx, in); err != nil {
			return fail("start %s: %v", in.name(), err)
		}
		s.insts = append(s.insts, in)
		if color == "blue" {
			blue = append(blue, in.url)
		} else {
			green = append(green, in.url)
		}
	}

	// The proxy, as a real process with its environment.
	tok := make([]byte, 16)
	for i := range tok {
		tok[i] = byte(s.rng.Uint32())
	}
	token := hex.EncodeToString(tok)
	publicAddr := fmt.Sprintf("127.0.0.1:%d", ports[4])
	adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[5])
	env := append(cleanEnv(),
		"BLUEGREEN_LISTEN="+publicAddr,
		"BLUEGREEN_ADMIN_LISTEN="+adminAddr,
		"BLUEGREEN_BLUE_URLS="+strings.Join(blue, ","),
		"BLUEGREEN_GREEN_URLS="+strings.Join(green, ","),
		"BLUEGREEN_STATE=file:"+filepath.Join(dir, "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL="+healthInterval.String(),
		"BLUEGREEN_HEALTH_TIMEOUT=500ms",
		"BLUEGREEN_UPSTREAM_IDLE_TIMEOUT="+upstreamIdle.String(),
		"BLUEGREEN_DRAIN_TIMEOUT=5s",
		"BLUEGREEN_ADMIN_TOKEN="+token,
		"BLUEGREEN_LOG_FORMAT=json",
		"BLUEGREEN_REPLICA_ID=soak",
	)
	proxyLog := filepath.Join(dir, "bluegreen.log")
	proxy, err := p.start("bluegreen", proxyBin, env, proxyLog)
	if err != nil {
		return fail("start bluegreen: %v", err)
	}
	s.admin = newAdminClient(adminAddr, token)
	if err := s.waitReady(ctx, proxy, 30*time.Second); err != nil {
		if ctx.Err() == nil {
			tail(proxyLog, 20)
		}
		return fail("bluegreen not ready: %v", err)
	}
	if err := s.waitAllHealthy(ctx, 15*time.Second); err != nil {
		return fail("instances not healthy: %v", err)
	}
	logf("bluegreen ready on %s (admin %s), instances %s %s", publicAddr, adminAddr, strings.Join(blue, " "), strings.Join(green, " "))

	tr := &http.Transport{
		MaxIdleConns:        2 * o.clients,
		MaxIdleConnsPerHost: o.clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	ld := &loader{client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, target: "http://" + publicAddr,
		seed: o.seed, clients: o.clients, st: s.st}

	// Warm-up, then the start sample at rest. Times in the report count
	// from here.
	s.st.t0 = time.Now()
	logf("warm-up: %s of load, %d clients", o.warmup, o.clients)
	if !ld.phase(ctx, o.warmup, nil) {
		return interrupted()
	}
	start, err := s.atRest(ctx, tr)
	if err != nil {
		return fail("start sample: %v", err)
	}
	logf("start: RSS %s, %v goroutines, %v fds", mib(start.rss), start.goroutines, start.fds)

	// The soak: load, chaos, samples.
	var samples []sample
	var smu sync.Mutex
	loadStart := time.Now()
	s.chaosAt = s.st.since()
	logf("soak: %s of load with cutovers and restarts", o.duration)
	ok := ld.phase(ctx, o.duration, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(sampleEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if m, err := scrape(context.Background(), s.admin); err == nil {
						smu.Lock()
						samples = append(samples, m.sample(time.Since(loadStart)))
						smu.Unlock()
					} else {
						logf("scrape: %v", err)
					}
				}
			}
		})
		s.chaos(ctx, stop)
		wg.Wait()
	})
	if !ok {
		return interrupted()
	}
	soakTime := time.Since(loadStart)
	end, err := s.atRest(ctx, tr)
	if err != nil {
		return fail("end sample: %v", err)
	}
	final, err := scrape(context.Background(), s.admin)
	if err != nil {
		return fail("final scrape: %v", err)
	}
	logf("end: RSS %s, %v goroutines, %v fds", mib(end.rss), end.goroutines, end.fds)

	// A clean shutdown of the proxy is part of the result.
	took, perr := proxy.terminate(15 * time.Second)
	rep, pass := s.report(reportData{start: start, end: end, samples: samples, final: final, soakTime: soakTime,
		proxyExit: perr, proxyStop: took, source: src, logs: readLog(proxyLog, s.st.t0)})
	fmt.Print(rep)
	if o.out != "" {
		err := os.MkdirAll(filepath.Dir(o.out), 0o755)
		if err == nil {
			err = os.WriteFile(o.out, []byte(rep), 0o644)
		}
		if err != nil {
			return fail("write %s: %v", o.out, err)
		}
		logf("wrote %s", o.out)
	}
	if ctx.Err() != nil {
		return interrupted()
	}
	if !pass {
		return 1
	}
	return 0
}

func interrupted() int {
	logf("interrupted: stopping every process")
	return 130
}

// atRest closes the client's idle connections, waits for the proxy to settle
// (its idle upstream connections time out) and samples it.
func (s *soak) atRest(ctx context.Context, tr *http.Transport) (sample, error) {
	tr.CloseIdleConnections()
	s.admin.Close()
	select {
	case <-time.After(s.o.settle):
	case <-ctx.Done():
		return sample{}, ctx.Err()
	}
	m, err := scrape(ctx, s.admin)
	if err != nil {
		return sample{}, err
	}
	return m.sample(s.st.since()), nil
}

// cleanEnv is the soak's environment without any BLUEGREEN_ variable.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BLUEGREEN_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startInstance starts in's demo-app and waits until its port accepts. A
// port still held by the killed process is retried for a few seconds.
func (s *soak) startInstance(ctx context.Context, in *instance) error {
	env := append(cleanEnv(), "DEPLOYMENT_COLOR="+in.color, "APP_VERSION="+in.version,
		"PORT="+strconv.Itoa(in.port), "LISTEN_ADDR=127.0.0.1")
	logPath := filepath.Join(s.dir, in.name()+".log")
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 0; ; attempt++ {
		c, err := s.procs.start(in.name(), s.demoBin, env, logPath)
		if err != nil {
			return err
		}
		for time.Now().Before(deadline) && !c.exited() {
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(in.url, "http://"), 200*time.Millisecond)
			if err == nil {
				conn.Close()
				in.c = c
				if attempt > 0 {
					s.restartRetry += attempt
				}
				return nil
			}
			if ctx.Err() != nil {
				c.kill()
				return ctx.Err()
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.kill()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within 10s (log %s: %v)", in.name(), in.url, logPath, c.err)
		}
		time.Sleep(200 * time.Millisecond) // exited at once, probably the port: try again
	}
}

func (s *soak) waitReady(ctx context.Context, proxy *child, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := adminclient.Probe(ctx, s.admin.Base(), adminclient.ReadyPath, 5*time.Second)
		if err == nil {
			return nil
		}
		if proxy.exited() {
			return fmt.Errorf("bluegreen exited: %v", proxy.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from /readyz within %s (last: %v)", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitAllHealthy waits until the proxy reports every instance healthy.
func (s *soak) waitAllHealthy(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, _, err := s.admin.Status(ctx)
		if err == nil && allHealthy(st, len(s.insts)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every instance healthy within %s (%v)", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allHealthy(st admin.Status, n int) bool {
	ins := instances(st)
	if len(ins) != n {
		return false
	}
	for _, in := range ins {
		if !in.Healthy {
			return false
		}
	}
	return true
}

func (s *soak) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

// chaos cuts over and kills/restarts instances until stop is closed, then
// (unless ctx has ended) brings back a killed instance and waits until every
// one is healthy. At
// most one instance is down at any time, and a kill waits until the proxy
// sees all four healthy, so a colour never loses both of its instances.
func (s *soak) chaos(ctx context.Context, stop <-chan struct{}) {
	now := time.Now()
	nextCut, nextKill := now.Add(s.between(cutoverMin, cutoverMax)), now.Add(s.between(killMin, killMax))
	var down *instance
	var restartAt time.Time
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			if ctx.Err() != nil {
				return // interrupted: everything is about to be stopped
			}
			if down != nil {
				s.restart(down)
			}
			if err := s.waitAllHealthy(context.Background(), 15*time.Second); err != nil {
				s.st.event("after the load: %v", err)
				logf("after the load: %v", err)
			}
			return
		case <-t.C:
		}
		now := time.Now()
		if down != nil && now.After(restartAt) {
			s.restart(down)
			down = nil
		}
		if now.After(nextCut) {
			s.cutover()
			nextCut = now.Add(s.between(cutoverMin, cutoverMax))
		}
		if down == nil && now.After(nextKill) {
			st, _, err := s.admin.Status(ctx)
			if err != nil || !allHealthy(st, len(s.insts)) {
				nextKill = now.Add(250 * time.Millisecond) // wait for the last restart to be seen healthy
				continue
			}
			down = s.insts[s.rng.IntN(len(s.insts))]
			s.kill(down, st)
			restartAt = time.Now().Add(s.between(downMin, downMax))
			nextKill = now.Add(s.between(killMin, killMax))
		}
	}
}

func (s *soak) cutover() {
	st, _, err := s.admin.Status(context.Background())
	if err != nil {
		s.cutovers["status error"]++
		s.st.event("cutover: status: %v", err)
		return
	}
	to := "green"
	if st.Active == "green" {
		to = "blue"
	}
	// What the target looks like, as the status showed it just before.
	c := st.Colors[to]
	ejected := 0
	for _, in := range c.Instances {
		if in.Healthy && in.Ejected {
			ejected++
		}
	}
	target := fmt.Sprintf("%d/%d healthy", c.Healthy, c.Total)
	if ejected > 0 {
		target += fmt.Sprintf(", %d of them ejected", ejected)
	}
	// The event is dated when the request leaves: the switch takes effect
	// before the answer arrives.
	at := s.st.since()
	code, active, err := cutover(context.Background(), s.admin, to)
	switch {
	case err != nil:
		s.cutovers["error"]++
		s.st.eventAt(at, "cutover to %s (%s): %v", to, target, err)
	default:
		s.cutovers[strconv.Itoa(code)]++
		if code != http.StatusOK || active != to {
			s.st.eventAt(at, "cutover to %s (%s): %d, active %q", to, target, code, active)
		} else {
			s.st.eventAt(at, "cutover to %s (%s)", to, target)
		}
	}
}

func (s *soak) kill(in *instance, st admin.Status) {
	ins := instances(st)
	sibling := ""
	for _, o := range s.insts {
		if o.color == in.color && o != in && ins[o.url].Ejected {
			sibling = ", the other " + in.color + " instance is ejected"
			s.siblingOut++
		}
	}
	active := ""
	if in.color == st.Active {
		active = " (active colour)"
		s.killedActive++
	}
	s.st.event("SIGKILL %s %s%s%s", in.name(), in.url, active, sibling)
	in.c.kill()
	s.kills++
}

func (s *soak) restart(in *instance) {
	if err := s.startInstance(context.Background(), in); err != nil {
		s.st.event("restart %s failed: %v", in.name(), err)
		logf("restart %s: %v", in.name(), err)
		return
	}
	s.restarts++
	s.st.event("restarted %s", in.name())
}

// ---------------------------------------------------------------- report

type reportData struct {
	start, end sample
	samples    []sample
	final      metrics
	soakTime   time.Duration
	proxyExit  error
	proxyStop  time.Duration
	source     string
	logs       []logLine
}

func (s *soak) report(d reportData) (string, bool) {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	st := s.st
	o := s.o

	maxOf := func(f func(sample) float64) float64 {
		m := max(f(d.start), f(d.end))
		for _, x := range d.samples {
			m = max(m, f(x))
		}
		return m
	}
	gets, getFail := st.get.requests.Load(), st.get.failures.Load()
	posts, postFail := st.post.requests.Load(), st.post.failures.Load()

	var verdict []string
	pass := true
	check := func(ok bool, msg string) {
		mark := "ok"
		if !ok {
			mark, pass = "**FAIL**", false
		}
		verdict = append(verdict, fmt.Sprintf("- %s: %s", mark, msg))
	}
	check(getFail == 0, fmt.Sprintf("GET failures: %d (want 0)", getFail))
	check(d.end.goroutines <= d.start.goroutines+goroutineSlack,
		fmt.Sprintf("goroutines at rest: %s → %s (allowed up to %s)", num(d.start.goroutines), num(d.end.goroutines), num(d.start.goroutines+goroutineSlack)))
	check(d.end.fds <= d.start.fds+fdSlack,
		fmt.Sprintf("open fds at rest: %s → %s (allowed up to %s)", num(d.start.fds), num(d.end.fds), num(d.start.fds+fdSlack)))
	verdict = append(verdict, fmt.Sprintf("- reported, not checked: %d POST failures; proxy shutdown: %s", postFail, exitText(d.proxyExit, d.proxyStop)))

	w("# bluegreen soak: %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w("Written by `bench/soak`. The real `bluegreen` binary in front of four `demo-app` processes\n")
	w("(blue v1 ×2, green v2 ×2) on 127.0.0.1; %d keep-alive clients, %d %% POST with a 16–512 byte\n", o.clients, postPercent)
	w("body (the demo app answers 405 to them), the rest GET; a cutover through the admin API every\n")
	w("%s–%s; every %s–%s, once the proxy sees all four instances healthy, one instance killed\n", cutoverMin, cutoverMax, killMin, killMax)
	w("with SIGKILL and restarted on its port %s–%s later, so at most one instance is ever down.\n", downMin, downMax)
	w("A failure is a transport error or a 5xx answer. Resources are from the proxy's own `/metrics`;\n")
	w("*start* and *end* are at rest: load stopped, client connections closed, %s of quiet\n", o.settle)
	w("(the upstream idle timeout is %s, so no pooled upstream connection is left either).\n\n", upstreamIdle)

	w("## Machine and run\n\n| | |\n|---|---|\n")
	w("| cores | %d (%s) |\n", runtime.NumCPU(), cpuModel())
	w("| kernel | %s |\n", kernel())
	w("| go | %s |\n", runtime.Version())
	w("| source | %s |\n", cell(d.source))
	w("| duration | %s of load and chaos, after %s of warm-up load |\n", d.soakTime.Round(time.Second), o.warmup)
	w("| seed | %d (`-seed %d` replays the same random draws; timing still varies) |\n", o.seed, o.seed)
	w("| proxy | health every %s (timeout 500ms, rise 2, fall 3), outlier ejection after 5 failures for 30s, other settings default |\n", healthInterval)
	w("| command | `bench/soak -duration %s -clients %d -seed %d` |\n\n", o.duration, o.clients, o.seed)

	w("## Traffic and chaos\n\n| | |\n|---|---|\n")
	w("| GET | %d requests, **%d failed** |\n", gets, getFail)
	w("| POST | %d requests, %d failed |\n", posts, postFail)
	w("| requests/s | %.0f (warm-up included) |\n", float64(gets+posts)/(d.soakTime+o.warmup).Seconds())
	w("| GET outcomes | %s |\n", outcomes(&st.get))
	w("| POST outcomes | %s |\n", outcomes(&st.post))
	w("| answered by (no 5xx) | %s |\n", s.colorCounts())
	w("| cutovers (HTTP status) | %s |\n", counts(s.cutovers))
	w("| kills / restarts | %d / %d: %d in the active colour, %d while the other instance of the colour was ejected, %d restart retries |\n\n",
		s.kills, s.restarts, s.killedActive, s.siblingOut, s.restartRetry)

	w("## Proxy process\n\n| | start | max under load | end | end − start |\n|---|---:|---:|---:|---:|\n")
	w("| RSS | %s | %s | %s | %s |\n", mib(d.start.rss), mib(maxOf(func(x sample) float64 { return x.rss })), mib(d.end.rss), signedMiB(d.end.rss-d.start.rss))
	w("| heap in use | %s | %s | %s | %s |\n", mib(d.start.heap), mib(maxOf(func(x sample) float64 { return x.heap })), mib(d.end.heap), signedMiB(d.end.heap-d.start.heap))
	w("| goroutines | %s | %s | %s | %+.0f |\n", num(d.start.goroutines), num(maxOf(func(x sample) float64 { return x.goroutines })), num(d.end.goroutines), d.end.goroutines-d.start.goroutines)
	w("| open fds | %s | %s | %s | %+.0f |\n\n", num(d.start.fds), num(maxOf(func(x sample) float64 { return x.fds })), num(d.end.fds), d.end.fds-d.start.fds)

	if len(d.samples) > 0 {
		w("Under load, every %s (%d samples, at most 13 shown; t from the start of the chaos):\n\n", sampleEvery, len(d.samples))
		w("| t | RSS | heap | goroutines | fds |\n|---:|---:|---:|---:|---:|\n")
		step := max(1, (len(d.samples)+11)/12)
		for i, x := range d.samples {
			if i%step == 0 || i == len(d.samples)-1 {
				w("| %s | %s | %s | %s | %s |\n", x.at.Round(time.Second), mib(x.rss), mib(x.heap), num(x.goroutines), num(x.fds))
			}
		}
		w("\n")
	}

	logCounts := map[string]float64{}
	for _, l := range d.logs {
		logCounts[l.level+" "+l.msg]++
	}
	w("## The proxy's own account\n\n| | |\n|---|---|\n")
	w("| `bluegreen_cutovers_total` (trigger/result) | %s |\n", counts(nonZero(d.final.sumBy("bluegreen_cutovers_total", "trigger", "result"))))
	w("| `bluegreen_requests_total` (method/code) | %s |\n", counts(d.final.sumBy("bluegreen_requests_total", "method", "code")))
	w("| `bluegreen_upstream_errors_total` (kind) | %s |\n", counts(nonZero(d.final.sumBy("bluegreen_upstream_errors_total", "kind"))))
	w("| `bluegreen_upstream_retries_total` | %s |\n", num(d.final.sumBy("bluegreen_upstream_retries_total")[""]))
	w("| `bluegreen_outlier_ejections_total` | %s |\n", num(d.final.sumBy("bluegreen_outlier_ejections_total")[""]))
	w("| log lines (level, message) | %s |\n\n", cell(counts(logCounts)))

	w("## Verdict\n\n%s\n", strings.Join(verdict, "\n"))

	st.mu.Lock()
	bursts, dropped := slices.Clone(st.bursts), st.dropped
	st.mu.Unlock()
	if len(bursts) > 0 {
		w("\n## Failed requests\n\n")
		w("Identical failures less than %s apart are one row. Times count from the start of the warm-up", burstGap)
		w(" (the chaos starts at %s).\n\n", s.chaosAt)
		w("| from | to | count | method | failure | body | the chaos event before it |\n|---:|---:|---:|---|---|---|---|\n")
		for _, f := range bursts {
			what := f.what
			if f.color != "" {
				what += " from " + f.color
			}
			before := "none"
			for _, e := range st.events {
				if e.at > f.first {
					break
				}
				before = fmt.Sprintf("%s earlier: %s", f.first-e.at, e.what)
			}
			w("| %s | %s | %d | %s | %s | %s | %s |\n", f.first, f.last, f.n, f.method, cell(what), cell(trunc(f.body, 100)), cell(before))
		}
		if dropped > 0 {
			w("\n%d more failures after the first %d rows.\n", dropped, maxBursts)
		}
		inWindow := func(at time.Duration) bool {
			for _, f := range bursts {
				if at >= f.first-5*time.Second && at <= f.last+2*time.Second {
					return true
				}
			}
			return false
		}
		if len(bursts) <= 12 {
			w("\nChaos events from 5 s before to 2 s after each row:\n\n```\n")
			for _, e := range st.events {
				if inWindow(e.at) {
					w("%9s  %s\n", e.at, e.what)
				}
			}
			w("```\n")
		}
		// The proxy's warnings and errors around the failures, one line per
		// kind (message, instance, error kind) with how often it came.
		type group struct {
			first logLine
			n     int
		}
		var groups []*group
		byKey := map[string]*group{}
		for _, l := range d.logs {
			if l.level == "INFO" || l.level == "DEBUG" || l.msg == "cutover" || !inWindow(l.at) {
				continue
			}
			var f map[string]any
			_ = json.Unmarshal([]byte(l.raw), &f)
			key := fmt.Sprint(l.level, l.msg, f["color"], f["instance"], f["kind"])
			if g := byKey[key]; g != nil {
				g.n++
				continue
			}
			byKey[key] = &group{first: l, n: 1}
			groups = append(groups, byKey[key])
		}
		if len(groups) > 0 {
			w("\nThe proxy's warnings and errors from 5 s before to 2 s after each row, cutovers left out: the first\n")
			w("line of each kind (message, instance, error kind) and how many there were (at most 40 kinds):\n\n```\n")
			for _, g := range groups[:min(len(groups), 40)] {
				w("%9s  ×%-6d %s\n", g.first.at, g.n, trunc(g.first.raw, 300))
			}
			w("```\n")
		}
	}
	w("\n<details><summary>Chaos log (%d events)</summary>\n\n```\n", len(st.events))
	for _, e := range st.events {
		w("%9s  %s\n", e.at, e.what)
	}
	w("```\n\n</details>\n")
	return b.String(), pass
}

func exitText(err error, took time.Duration) string {
	if err == nil {
		return fmt.Sprintf("exit 0, %s after SIGTERM", took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v, %s after SIGTERM", err, took.Round(time.Millisecond))
}

func (s *soak) colorCounts() string {
	m := map[string]float64{}
	s.st.byColor.Range(func(k, v any) bool {
		m[k.(string)] = float64(v.(*atomic.Int64).Load())
		return true
	})
	return counts(m)
}

func outcomes(ms *methodStats) string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m := map[string]float64{}
	for k, v := range ms.statuses {
		m[k] = float64(v)
	}
	return cell(counts(m))
}

// counts formats counts as "k: n, k: n", largest first.
func counts[N int | float64](m map[string]N) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %s", cmp.Or(k, "all"), num(float64(m[k])))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func nonZero(m map[string]float64) map[string]float64 {
	maps.DeleteFunc(m, func(_ string, v float64) bool { return v == 0 })
	return m
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func signedMiB(b float64) string { return fmt.Sprintf("%+.1f MiB", b/(1<<20)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// source names what was built: the commit and whether the tree was clean.
func source(root string) string {
	rev, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return root + " (not a git work tree)"
	}
	out, _ := exec.Command("git", "-C", root, "status", "--porcelain").Output()
	var paths []string
	for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
		if len(line) > 3 {
			paths = append(paths, line[3:])
		}
	}
	src := "commit " + strings.TrimSpace(string(rev))
	if len(paths) == 0 {
		return src + ", clean work tree"
	}
	shown := paths[:min(len(paths), 8)]
	more := ""
	if len(paths) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(paths)-len(shown))
	}
	return fmt.Sprintf("%s plus %d changed or new paths in the work tree: %s%s", src, len(paths), strings.Join(shown, " "), more)
}

// logLine is one line of the proxy's JSON log.
type logLine struct {
	at         time.Duration // from t0
	level, msg string
	raw        string
}

// readLog parses the proxy's JSON log; times are made relative to t0.
func readLog(path string, t0 time.Time) []logLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Level == "" {
			out = append(out, logLine{level: "?", msg: "not JSON", raw: sc.Text()})
			continue
		}
		out = append(out, logLine{at: l.Time.Sub(t0).Truncate(time.Millisecond), level: l.Level, msg: l.Msg, raw: sc.Text()})
	}
	return out
}

// tail prints the last n lines of a log to stderr.
func tail(path string, n int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for _, l := range lines[max(0, len(lines)-n):] {
		fmt.Fprintln(os.Stderr, "  "+l)
	}
}
