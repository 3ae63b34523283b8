// Command logship ships the logs of a compose project's containers to a log
// store, without a registry image: it is built with the repository's Go.
//
// It asks the Docker Engine API (the socket) for the project's containers,
// follows each one's log stream (stdout and stderr, with Docker's
// timestamps), turns every line into one JSON object (a JSON line as it is,
// e.g. the proxy's ECS records; any other line as {"message": line}), adds
// @timestamp (when absent), container.name, container.id and
// labels.compose_service, and sends them in batches:
//
//	-format jsonline  VictoriaLogs' /insert/jsonline (Content-Type
//	                  application/stream+json: without it VictoriaLogs answers
//	                  200 and stores nothing)
//	-format bulk      the Elasticsearch bulk API (Elasticsearch, or
//	                  VictoriaLogs' /insert/elasticsearch/_bulk)
//
// A batch that fails is sent again (with a growing pause) until it is
// accepted; what was accepted is recorded per container in -state, so a
// restarted shipper resumes after the last line it shipped.
//
//	logship -url 'http://victorialogs:9428/insert/jsonline?_time_field=@timestamp&_msg_field=message&_stream_fields=container.name'
//	logship probe URL     exit 0 when URL answers 2xx (a health check for scratch images)
//	logship stats         print this shipper's counters (from its -listen address)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "probe":
			os.Exit(probe(os.Args[2:]))
		case "stats":
			addr := "127.0.0.1:9400"
			if len(os.Args) > 2 {
				addr = os.Args[2]
			}
			os.Exit(printStats(addr))
		}
	}
	os.Exit(run())
}

// probe GETs a URL and exits 0 on a 2xx answer.
func probe(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: logship probe URL")
		return 2
	}
	c := &http.Client{Timeout: 3 * time.Second}
	res, err := c.Get(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, res.Status)
		return 1
	}
	return 0
}

func printStats(addr string) int {
	c := &http.Client{Timeout: 3 * time.Second}
	res, err := c.Get("http://" + addr + "/stats")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer res.Body.Close()
	io.Copy(os.Stdout, res.Body)
	return 0
}

type config struct {
	socket   string
	project  string
	services []string
	sink     string
	format   string
	index    string
	user     string
	passFile string
	state    string
	listen   string
	batch    int
	flush    time.Duration
	poll     time.Duration
}

func run() int {
	var cfg config
	var services string
	flag.StringVar(&cfg.socket, "docker", "/var/run/docker.sock", "Docker Engine API socket")
	flag.StringVar(&cfg.project, "project", "", "compose project whose containers to follow (default: this container's own project)")
	flag.StringVar(&services, "services", "", "comma-separated compose services to follow (default: every service but this one)")
	flag.StringVar(&cfg.sink, "url", "", "where to send (see -format)")
	flag.StringVar(&cfg.format, "format", "jsonline", "jsonline (VictoriaLogs) or bulk (Elasticsearch bulk API)")
	flag.StringVar(&cfg.index, "index", "logs-bluegreen-default", "index or data stream of -format bulk")
	flag.StringVar(&cfg.user, "user", "", "basic-auth user of the sink")
	flag.StringVar(&cfg.passFile, "password-file", "", "file with the basic-auth password (a Docker secret)")
	flag.StringVar(&cfg.state, "state", "", "file recording what was shipped per container (empty: none)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:9400", "address of /healthz and /stats")
	flag.IntVar(&cfg.batch, "batch", 500, "lines per request at most")
	flag.DurationVar(&cfg.flush, "flush", time.Second, "longest wait before a partial batch is sent")
	flag.DurationVar(&cfg.poll, "poll", 2*time.Second, "how often the container list is read")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if cfg.sink == "" {
		log.Error("-url is required")
		return 2
	}
	if cfg.format != "jsonline" && cfg.format != "bulk" {
		log.Error("-format must be jsonline or bulk", "format", cfg.format)
		return 2
	}
	for _, s := range strings.Split(services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.services = append(cfg.services, s)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := newShipper(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if err := s.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

// line is one log line of one container.
type line struct {
	container string // id
	ts        time.Time
	doc       []byte // one JSON object
}

// shipper follows containers and sends their lines. Counters are atomics;
// positions are guarded by mu.
type shipper struct {
	cfg    config
	log    *slog.Logger
	docker *http.Client
	sink   *http.Client
	pass   string
	self   string // this container's id (hostname), never followed

	lines chan line
	read  atomic.Int64 // lines read from Docker
	sent  atomic.Int64 // lines the sink accepted
	fails atomic.Int64 // failed requests to the sink

	mu        sync.Mutex
	positions map[string]time.Time // container id -> last shipped timestamp
	lastRead  map[string]time.Time // container id -> last timestamp read by an ended follower
	following map[string]bool
}

func newShipper(cfg config, log *slog.Logger) (*shipper, error) {
	s := &shipper{
		cfg: cfg, log: log,
		docker: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", cfg.socket)
			},
		}},
		sink:      &http.Client{Timeout: 30 * time.Second},
		lines:     make(chan line, 4*cfg.batch),
		positions: map[string]time.Time{},
		lastRead:  map[string]time.Time{},
		following: map[string]bool{},
	}
	s.self, _ = os.Hostname()
	if cfg.passFile != "" {
		b, err := os.ReadFile(cfg.passFile)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		s.pass = strings.TrimSpace(string(b))
	}
	if cfg.state != "" {
		if b, err := os.ReadFile(cfg.state); err == nil {
			if err := json.Unmarshal(b, &s.positions); err != nil {
				return nil, fmt.Errorf("state file %s: %w", cfg.state, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state file: %w", err)
		}
	}
	return s, nil
}

func (s *shipper) run(ctx context.Context) error {
	if s.cfg.project == "" {
		p, err := s.ownProject(ctx)
		if err != nil {
			return fmt.Errorf("finding this container's compose project (or pass -project): %w", err)
		}
		s.cfg.project = p
	}
	s.log.Info("shipping", "project", s.cfg.project, "services", s.cfg.services, "format", s.cfg.format, "url", redact(s.cfg.sink))
	ln, err := net.Listen("tcp", s.cfg.listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.stats())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	sendCtx, stopSend := context.WithCancel(context.Background())
	go func() { defer wg.Done(); s.sendLoop(sendCtx) }()
	tick := time.NewTicker(s.cfg.poll)
	defer tick.Stop()
	var followers sync.WaitGroup
	for {
		if err := s.discover(ctx, &followers); err != nil && ctx.Err() == nil {
			s.log.Warn("listing containers", "err", err)
		}
		select {
		case <-ctx.Done():
			// Followers end with ctx; then the sender flushes what they read.
			// A sink that stays down gets 10 s more.
			t := time.AfterFunc(10*time.Second, stopSend)
			followers.Wait()
			close(s.lines)
			wg.Wait()
			t.Stop()
			stopSend()
			s.log.Info("stopped", "read", s.read.Load(), "shipped", s.sent.Load())
			return ctx.Err()
		case <-tick.C:
		}
	}
}

type stats struct {
	Project    string `json:"project"`
	Containers int    `json:"containers"`
	Read       int64  `json:"lines_read"`
	Shipped    int64  `json:"lines_shipped"`
	Failures   int64  `json:"failed_requests"`
}

func (s *shipper) stats() stats {
	s.mu.Lock()
	n := len(s.following)
	s.mu.Unlock()
	return stats{Project: s.cfg.project, Containers: n, Read: s.read.Load(), Shipped: s.sent.Load(), Failures: s.fails.Load()}
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Redacted()
}

func (s *shipper) dockerGet(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	res, err := s.docker.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		res.Body.Close()
		return nil, fmt.Errorf("docker %s: %s %s", path, res.Status, bytes.TrimSpace(b))
	}
	return res, nil
}

func (s *shipper) ownProject(ctx context.Context) (string, error) {
	res, err := s.dockerGet(ctx, "/containers/"+url.PathEscape(s.self)+"/json")
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var c struct {
		Config struct{ Labels map[string]string }
	}
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
		return "", err
	}
	p := c.Config.Labels["com.docker.compose.project"]
	if p == "" {
		return "", errors.New("no com.docker.compose.project label")
	}
	return p, nil
}

// discover starts a follower for every running container of the project
// that is not followed yet.
func (s *shipper) discover(ctx context.Context, wg *sync.WaitGroup) error {
	filters, _ := json.Marshal(map[string][]string{"label": {"com.docker.compose.project=" + s.cfg.project}})
	res, err := s.dockerGet(ctx, "/containers/json?filters="+url.QueryEscape(string(filters)))
	if err != nil {
		return err
	}
	var list []struct {
		ID     string `json:"Id"`
		Names  []string
		Labels map[string]string
	}
	err = json.NewDecoder(res.Body).Decode(&list)
	res.Body.Close()
	if err != nil {
		return err
	}
	for _, c := range list {
		svc := c.Labels["com.docker.compose.service"]
		if strings.HasPrefix(c.ID, s.self) && s.self != "" {
			continue
		}
		if len(s.cfg.services) > 0 && !slices.Contains(s.cfg.services, svc) {
			continue
		}
		s.mu.Lock()
		busy := s.following[c.ID]
		s.following[c.ID] = true
		// A container followed before (it restarted): after what was read,
		// shipped or not yet; after a restart of logship: after what was
		// shipped.
		since := s.positions[c.ID]
		if r := s.lastRead[c.ID]; r.After(since) {
			since = r
		}
		s.mu.Unlock()
		if busy {
			continue
		}
		name := c.ID[:12]
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			last, err := s.follow(ctx, c.ID, name, svc, since)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("following", "container", name, "err", err)
			}
			s.mu.Lock()
			if last.After(s.lastRead[c.ID]) {
				s.lastRead[c.ID] = last
			}
			delete(s.following, c.ID)
			s.mu.Unlock()
		}()
	}
	return nil
}

// follow reads one container's log stream until it ends (the container
// stopped) or ctx ends. It returns the timestamp of the last line it read.
func (s *shipper) follow(ctx context.Context, id, name, service string, since time.Time) (last time.Time, err error) {
	q := url.Values{"follow": {"1"}, "stdout": {"1"}, "stderr": {"1"}, "timestamps": {"1"}}
	if !since.IsZero() {
		// Docker's since is inclusive: start after the last shipped line.
		next := since.Add(time.Nanosecond)
		q.Set("since", fmt.Sprintf("%d.%09d", next.Unix(), next.Nanosecond()))
	}
	res, err := s.dockerGet(ctx, "/containers/"+id+"/logs?"+q.Encode())
	if err != nil {
		return last, err
	}
	defer res.Body.Close()
	s.log.Info("following", "container", name, "service", service)
	var r io.Reader = res.Body
	if res.Header.Get("Content-Type") != "application/vnd.docker.raw-stream" {
		r = &demux{r: bufio.NewReader(res.Body)}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	extra := map[string]any{"container.name": name, "container.id": id[:12], "labels.compose_service": service}
	for {
		raw, err := br.ReadBytes('\n')
		if len(raw) > 0 {
			if l, ok := parseLine(raw, extra); ok {
				l.container = id
				s.read.Add(1)
				select {
				case s.lines <- l:
					last = l.ts
				case <-ctx.Done():
					return last, ctx.Err()
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return last, nil
			}
			return last, err
		}
	}
}

// demux reads the payload of Docker's multiplexed stream (8-byte frame
// headers: stream, 3 zero bytes, big-endian length).
type demux struct {
	r    *bufio.Reader
	left uint32
}

func (d *demux) Read(p []byte) (int, error) {
	for d.left == 0 {
		var h [8]byte
		if _, err := io.ReadFull(d.r, h[:]); err != nil {
			return 0, err
		}
		d.left = binary.BigEndian.Uint32(h[4:])
	}
	if uint32(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.left -= uint32(n)
	return n, err
}

// parseLine turns "TIMESTAMP TEXT\n" into a JSON object with extra fields.
func parseLine(raw []byte, extra map[string]any) (line, bool) {
	raw = bytes.TrimRight(raw, "\r\n")
	tsText, text, ok := bytes.Cut(raw, []byte(" "))
	if !ok {
		return line{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(tsText))
	if err != nil {
		return line{}, false
	}
	if len(bytes.TrimSpace(text)) == 0 {
		return line{}, false
	}
	doc := map[string]any{}
	if text[0] != '{' || json.Unmarshal(text, &doc) != nil {
		doc = map[string]any{"message": string(text)}
	}
	if _, ok := doc["@timestamp"]; !ok {
		doc["@timestamp"] = ts.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range extra {
		doc[k] = v
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return line{}, false
	}
	return line{ts: ts, doc: b}, true
}

// sendLoop batches lines and sends each batch until the sink accepts it.
// It returns when s.lines is closed and drained, or ctx ends.
func (s *shipper) sendLoop(ctx context.Context) {
	var batch []line
	timer := time.NewTimer(s.cfg.flush)
	defer timer.Stop()
	flush := func() {
		if len(batch) > 0 {
			s.send(ctx, batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				flush()
				return
			}
			batch = append(batch, l)
			if len(batch) >= s.cfg.batch {
				flush()
			}
		case <-timer.C:
			flush()
			timer.Reset(s.cfg.flush)
		}
	}
}

func (s *shipper) body(batch []line) []byte {
	var b bytes.Buffer
	for _, l := range batch {
		if s.cfg.format == "bulk" {
			// "create": data streams take only creates.
			fmt.Fprintf(&b, `{"create":{"_index":%q}}`+"\n", s.cfg.index)
		}
		b.Write(l.doc)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (s *shipper) send(ctx context.Context, batch []line) {
	body := s.body(batch)
	ctype := "application/stream+json"
	if s.cfg.format == "bulk" {
		ctype = "application/x-ndjson"
	}
	pause := 200 * time.Millisecond
	for {
		err := s.post(ctx, body, ctype)
		if err == nil {
			break
		}
		s.fails.Add(1)
		s.log.Warn("sending a batch; trying again", "lines", len(batch), "err", err, "pause", pause.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
	s.sent.Add(int64(len(batch)))
	s.mu.Lock()
	for _, l := range batch {
		if l.ts.After(s.positions[l.container]) {
			s.positions[l.container] = l.ts
		}
	}
	var state []byte
	if s.cfg.state != "" {
		state, _ = json.Marshal(s.positions)
	}
	s.mu.Unlock()
	if state != nil {
		tmp := s.cfg.state + ".tmp"
		if err := os.WriteFile(tmp, state, 0o644); err == nil {
			err = os.Rename(tmp, filepath.Clean(s.cfg.state))
			if err != nil {
				s.log.Warn("state file", "err", err)
			}
		} else {
			s.log.Warn("state file", "err", err)
		}
	}
}

func (s *shipper) post(ctx context.Context, body []byte, ctype string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.sink, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	if s.cfg.user != "" {
		req.SetBasicAuth(s.cfg.user, s.pass)
	}
	res, err := s.sink.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", res.Status, bytes.TrimSpace(b[:min(len(b), 300)]))
	}
	if s.cfg.format == "bulk" {
		// The bulk API answers 200 with per-item errors.
		var r struct{ Errors bool }
		if json.Unmarshal(b, &r) == nil && r.Errors {
			return fmt.Errorf("bulk answer has item errors: %s", b[:min(len(b), 300)])
		}
	}
	return nil
}
