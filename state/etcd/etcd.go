// Package etcd is a state.Store kept in etcd, for a fleet of proxies that
// share one active colour.
//
// The state lives under one key, <prefix>/state, encoded with state.Encode.
// A CompareAndSwap is one etcd transaction guarded by the key's mod
// revision, so two replicas switching at once cannot both win. Every Watch
// follows the key and resumes after a broken watch (a lost member, a lost
// leader) by reloading the key and watching again from the revision it
// read, so a replica that was cut off catches up as soon as the cluster
// answers again.
//
// It lives in its own package so that package state, and a build that only
// uses the file store, carry no etcd dependency.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/cryoprotect/bluegreen/state"
)

// ErrUnavailable reports that etcd did not answer in time (no reachable
// member, or no quorum). Errors from a Store wrap it together with the
// cause; it wraps state.ErrUnavailable, so a state.CachedStore can serve
// its local copy.
var ErrUnavailable error = unavailableError{}

type unavailableError struct{}

func (unavailableError) Error() string        { return "etcd unavailable" }
func (unavailableError) Is(target error) bool { return target == state.ErrUnavailable }

// Defaults for Options.
const (
	DefaultOpTimeout     = 2 * time.Second
	DefaultProbeInterval = time.Second
)

// Options configure a Store. The zero value connects without TLS or
// authentication and uses the defaults above.
type Options struct {
	// OpTimeout bounds every read and write, so a caller learns quickly that
	// etcd is away (a cutover then answers 503 instead of hanging).
	OpTimeout time.Duration
	// ProbeInterval is how often Up is refreshed by a read of the key.
	ProbeInterval time.Duration

	// CAFile verifies the members' certificates; setting it (or CertFile)
	// switches the connection to TLS.
	CAFile string
	// CertFile and KeyFile are a client certificate for mutual TLS; both or
	// neither.
	CertFile, KeyFile string
	// Username and Password authenticate with etcd's user store.
	Username, Password string

	// Log receives watch and connectivity changes; nil discards them.
	Log *slog.Logger

	// CountsTTL is the lease of the rollout counts this replica publishes
	// (PublishCounts): how long they outlive a replica that died or was
	// cut off. Default DefaultLeaseTTL.
	CountsTTL time.Duration
}

// Spec is a parsed etcd store spec.
type Spec struct {
	Endpoints []string // host:port of each member
	Prefix    string   // key prefix, starting with "/" and without a trailing "/"
}

// Key returns the key that holds the state.
func (s Spec) Key() string { return s.Prefix + "/state" }

// ParseSpec parses "etcd://host1:2379,host2:2379/prefix/path". The rest
// after "etcd://" is also accepted alone (as returned by state.ParseSpec).
func ParseSpec(spec string) (Spec, error) {
	rest := strings.TrimPrefix(spec, "etcd://")
	hosts, path, ok := strings.Cut(rest, "/")
	if !ok || strings.Trim(path, "/") == "" {
		return Spec{}, fmt.Errorf("etcd spec %q: no key prefix (want etcd://host:2379,host:2379/prefix)", spec)
	}
	var sp Spec
	for h := range strings.SplitSeq(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if host, port, err := net.SplitHostPort(h); err != nil || host == "" || port == "" {
			return Spec{}, fmt.Errorf("etcd spec %q: endpoint %q: want host:port", spec, h)
		}
		sp.Endpoints = append(sp.Endpoints, h)
	}
	if len(sp.Endpoints) == 0 {
		return Spec{}, fmt.Errorf("etcd spec %q: no endpoints (want etcd://host:2379,host:2379/prefix)", spec)
	}
	sp.Prefix = "/" + strings.Trim(path, "/")
	return sp, nil
}

// ErrRejected reports that etcd refused this client: its certificate is not
// trusted by the CA file, or etcd refused the client certificate, or the
// user name or password is wrong. It is a configuration problem: retrying
// does not help.
var ErrRejected = errors.New("etcd rejected the client")

// Store is a state.Store in etcd. It is safe for concurrent use. Each Watch
// runs one goroutine until its context ends or the Store is closed; Close
// waits for them. A Store must not be copied.
type Store struct {
	cli  atomic.Pointer[clientv3.Client] // nil until connected (see Open)
	ccfg clientv3.Config
	spec Spec
	key  string
	opts Options
	log  *slog.Logger
	up   atomic.Bool
	// quorumAt is when the last linearizable read that a quorum answered
	// was sent (Unix nanoseconds): etcd was reachable at that moment.
	quorumAt atomic.Int64
	ctx      context.Context // ends at Close
	stop     context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	close    atomic.Bool
	counts   counts // rollout counts publications (counts.go)
}

var _ state.Store = (*Store)(nil)

// Open connects to the cluster named by spec. It does not wait for a
// quorum: a cluster that is down shows in the first Load. Bad options
// (unreadable certificate files, half a key pair, an expired client
// certificate) are errors here, and so is a cluster that answers but
// refuses this client (ErrRejected: a server certificate the CA file does
// not trust, a client certificate etcd does not accept, a wrong password).
// When no member can be reached, Open still returns a Store: with
// authentication it keeps connecting in the background (with backoff) and
// its operations fail with ErrUnavailable until then.
func Open(ctx context.Context, spec string, opts Options) (*Store, error) {
	sp, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tlsCfg, err := tlsConfig(opts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	if tlsCfg != nil {
		if err := preflight(ctx, sp.Endpoints, tlsCfg, opts.OpTimeout); err != nil {
			return nil, fmt.Errorf("etcd store: %w", err)
		}
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s := &Store{spec: sp, key: sp.Key(), opts: opts, log: log, ctx: sctx, stop: stop}
	s.ccfg = clientv3.Config{
		Endpoints:            sp.Endpoints,
		DialTimeout:          opts.OpTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: opts.OpTimeout,
		TLS:                  tlsCfg,
		Username:             opts.Username,
		Password:             opts.Password,
		Logger:               zap.NewNop(),
		Context:              sctx,
		// Reconnect soon after a member is reachable again (a healed
		// partition): gRPC's defaults back off up to two minutes and
		// wait 20s for one connection attempt.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: opts.OpTimeout,
		})},
	}
	// Without authentication New does not talk to etcd; with it, New
	// fetches a token and fails when no member answers.
	cli, err := clientv3.New(s.ccfg)
	switch {
	case err == nil:
		s.cli.Store(cli)
		s.up.Store(true)
	case rejected(err):
		stop()
		return nil, fmt.Errorf("etcd store %s: %w: %w", strings.Join(sp.Endpoints, ","), ErrRejected, err)
	default:
		log.Error("etcd unreachable: connecting in the background", "endpoints", strings.Join(sp.Endpoints, ","), "err", err)
		s.wg.Go(s.connect)
	}
	s.wg.Go(s.probe)
	return s, nil
}

// rejected reports whether err is etcd refusing the credentials.
func rejected(err error) bool {
	return errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrGRPCAuthFailed) ||
		strings.Contains(err.Error(), rpctypes.ErrAuthFailed.Error())
}

// connect retries clientv3.New with backoff until it succeeds or the Store
// is closed.
func (s *Store) connect() {
	backoff := 200 * time.Millisecond
	for sleep(s.ctx, backoff) {
		cli, err := clientv3.New(s.ccfg)
		if err == nil {
			s.cli.Store(cli)
			s.log.Info("etcd connected", "endpoints", strings.Join(s.spec.Endpoints, ","))
			return
		}
		if rejected(err) {
			s.log.Error("etcd rejects the credentials; check the user name and password", "err", err)
		} else {
			s.log.Debug("etcd still unreachable", "err", err, "backoff", backoff)
		}
		backoff = min(2*backoff, time.Second)
	}
}

// client returns the etcd client, or nil while Open's background connection
// has not succeeded yet.
func (s *Store) client() *clientv3.Client { return s.cli.Load() }

// notConnected is the error of an operation before the client exists.
func (s *Store) notConnected(op string) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("state: etcd %s %s: %w", op, s.key, state.ErrClosed)
	}
	return fmt.Errorf("state: etcd %s %s: %w: not connected to %s yet", op, s.key, ErrUnavailable, strings.Join(s.spec.Endpoints, ","))
}

// tlsConfig builds the client's TLS configuration from the files in o. A
// client certificate outside its validity period at now is an error.
func tlsConfig(o Options, now time.Time) (*tls.Config, error) {
	if o.CAFile == "" && o.CertFile == "" && o.KeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("client certificate and key must be given together")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		leaf := cert.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, fmt.Errorf("client certificate %s: %w", o.CertFile, err)
			}
		}
		switch {
		case now.After(leaf.NotAfter):
			return nil, fmt.Errorf("client certificate %s expired at %s", o.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(leaf.NotBefore):
			return nil, fmt.Errorf("client certificate %s is not valid before %s", o.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// preflight makes one TLS connection to each endpoint, in parallel, within
// timeout, so that a certificate problem is reported as such at start-up
// (the etcd client only ever reports a timeout). A member that verifies
// and accepts the connection ends the check; so does every member being
// unreachable (a network problem: the Store retries). A certificate the CA
// does not trust, or a client certificate a member refuses, is ErrRejected.
func preflight(ctx context.Context, endpoints []string, cfg *tls.Config, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	errs := make(chan error, len(endpoints))
	for _, ep := range endpoints {
		go func() { errs <- checkTLS(ctx, ep, cfg) }()
	}
	var rejectedErr error
	for range endpoints {
		err := <-errs
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrRejected) && rejectedErr == nil:
			rejectedErr = err
		}
	}
	return rejectedErr
}

// checkTLS connects to ep, completes the handshake and waits briefly for
// the member's first bytes, which is when a TLS 1.3 server's refusal of the
// client certificate arrives.
func checkTLS(ctx context.Context, ep string, base *tls.Config) error {
	cfg := base.Clone()
	if host, _, err := net.SplitHostPort(ep); err == nil && cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{}}
	c, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		var verr *tls.CertificateVerificationError
		var alert tls.AlertError
		if errors.As(err, &verr) || errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls") {
			return fmt.Errorf("%w: %s: %w", ErrRejected, ep, err)
		}
		return err
	}
	defer c.Close()
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > 500*time.Millisecond {
		dl = time.Now().Add(500 * time.Millisecond)
	}
	_ = c.SetReadDeadline(dl)
	_, err = c.Read(make([]byte, 1))
	var alert tls.AlertError
	if err != nil && (errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls")) {
		hint := ""
		if len(base.Certificates) > 0 && strings.Contains(err.Error(), "certificate required") {
			hint = " (the client certificate was not sent: it is not signed by a CA the member accepts)"
		}
		return fmt.Errorf("%w: %s refused the client certificate%s: %w", ErrRejected, ep, hint, err)
	}
	return nil
}

// Client returns the etcd client, for an election that shares the
// connection (see Elect).
func (s *Store) Client() *clientv3.Client { return s.client() }

// Spec returns the parsed spec.
func (s *Store) Spec() Spec { return s.spec }

// heardWithin reports whether a read sent less than d ago was answered by
// a quorum.
func (s *Store) heardWithin(d time.Duration) bool {
	return time.Since(time.Unix(0, s.quorumAt.Load())) < d
}

// Up reports whether the last operation or probe reached a quorum.
func (s *Store) Up() bool { return s.up.Load() }

// setUp records reachability from an operation's result and logs changes.
// An answer (success, conflict, absent key) means up; ErrUnavailable means
// down; anything else (a cancelled caller, a closed store) tells nothing.
func (s *Store) setUp(err error) {
	var up bool
	switch {
	case err == nil, errors.Is(err, state.ErrConflict), errors.Is(err, state.ErrNotFound):
		up = true
	case errors.Is(err, ErrUnavailable):
		up = false
	default:
		return
	}
	if s.up.Swap(up) != up {
		if up {
			s.log.Info("etcd reachable again", "key", s.key)
		} else {
			s.log.Error("etcd unreachable: routing stays on the last applied state, switches fail", "key", s.key, "err", err)
		}
	}
}

// probe refreshes Up with a linearizable read every ProbeInterval.
func (s *Store) probe() {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			_, err := s.get(s.ctx)
			if s.ctx.Err() == nil {
				s.setUp(err)
			}
		}
	}
}

// opCtx bounds one operation by the caller's context, OpTimeout and Close.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// wrap turns a client error into one that names the key and, when the
// cluster did not answer, wraps ErrUnavailable.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("state: etcd %s %s: %w", op, s.key, state.ErrClosed)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("state: etcd %s %s: %w: no answer from %s within %s", op, s.key, ErrUnavailable, strings.Join(s.spec.Endpoints, ","), s.opts.OpTimeout)
	}
	return fmt.Errorf("state: etcd %s %s: %w: %w", op, s.key, ErrUnavailable, err)
}

func (s *Store) get(ctx context.Context) (*clientv3.GetResponse, error) {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	cli := s.client()
	if cli == nil {
		return nil, s.notConnected("load")
	}
	sent := time.Now()
	resp, err := cli.Get(octx, s.key)
	if err == nil {
		s.quorumAt.Store(sent.UnixNano())
	}
	if err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil {
			return nil, fmt.Errorf("state: etcd load %s: %w", s.key, ctx.Err())
		}
		return nil, s.wrap(octx, "load", err)
	}
	return resp, nil
}

// Load reads the state with a linearizable read. An absent key wraps
// state.ErrNotFound; an unreachable cluster wraps ErrUnavailable.
func (s *Store) Load(ctx context.Context) (state.State, error) {
	if s.close.Load() {
		return state.State{}, fmt.Errorf("state: etcd load %s: %w", s.key, state.ErrClosed)
	}
	resp, err := s.get(ctx)
	s.setUp(err)
	if err != nil {
		return state.State{}, err
	}
	if len(resp.Kvs) == 0 {
		return state.State{}, fmt.Errorf("state: etcd load %s: %w", s.key, state.ErrNotFound)
	}
	st, err := state.Decode(resp.Kvs[0].Value)
	if err != nil {
		return state.State{}, fmt.Errorf("state: etcd load %s: corrupt state: %w", s.key, err)
	}
	return st, nil
}

// CompareAndSwap stores next if the stored generation equals expect (0: the
// key must not exist). It reads the key, checks its generation, and writes
// in a transaction that succeeds only if the key's mod revision is still the
// one read, so a concurrent writer makes it fail with state.ErrConflict.
func (s *Store) CompareAndSwap(ctx context.Context, expect uint64, next state.State) error {
	if s.close.Load() {
		return fmt.Errorf("state: etcd store %s: %w", s.key, state.ErrClosed)
	}
	if next.Generation <= expect {
		return fmt.Errorf("state: etcd store %s: next generation %d must be greater than expected generation %d", s.key, next.Generation, expect)
	}
	data, err := state.Encode(next)
	if err != nil {
		return fmt.Errorf("state: etcd store %s: %w", s.key, err)
	}
	err = s.cas(ctx, expect, data)
	s.setUp(err)
	return err
}

func (s *Store) cas(ctx context.Context, expect uint64, data []byte) error {
	var cmp clientv3.Cmp
	if expect == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(s.key), "=", 0)
	} else {
		resp, err := s.get(ctx)
		if err != nil {
			return err
		}
		cur, rev, err := s.current(resp)
		if err != nil {
			return err
		}
		if cur != expect {
			return s.conflict(expect, cur)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(s.key), "=", rev)
	}
	cli := s.client()
	if cli == nil {
		return s.notConnected("store")
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := cli.Txn(octx).If(cmp).Then(clientv3.OpPut(s.key, string(data))).Else(clientv3.OpGet(s.key)).Commit()
	if err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil {
			return fmt.Errorf("state: etcd store %s: %w", s.key, ctx.Err())
		}
		return s.wrap(octx, "store", err)
	}
	if resp.Succeeded {
		return nil
	}
	var cur uint64
	if rs := resp.Responses; len(rs) == 1 && rs[0].GetResponseRange() != nil {
		if kvs := rs[0].GetResponseRange().Kvs; len(kvs) == 1 {
			if st, err := state.Decode(kvs[0].Value); err == nil {
				cur = st.Generation
			}
		}
	}
	return s.conflict(expect, cur)
}

// current decodes the generation and mod revision of a read of the key
// (0, 0 when absent).
func (s *Store) current(resp *clientv3.GetResponse) (gen uint64, rev int64, err error) {
	if len(resp.Kvs) == 0 {
		return 0, 0, nil
	}
	st, err := state.Decode(resp.Kvs[0].Value)
	if err != nil {
		return 0, 0, fmt.Errorf("state: etcd store %s: corrupt state, not overwriting it: %w", s.key, err)
	}
	return st.Generation, resp.Kvs[0].ModRevision, nil
}

func (s *Store) conflict(expect, cur uint64) error {
	if cur == 0 {
		return fmt.Errorf("state: etcd store %s: expected generation %d, store is empty or changed: %w", s.key, expect, state.ErrConflict)
	}
	return fmt.Errorf("state: etcd store %s: expected generation %d, stored generation is %d: %w", s.key, expect, cur, state.ErrConflict)
}

// Watch delivers the stored state and then every state stored after it, by
// any writer, in generation order with latest-value semantics. The first
// state may be one the reader already has (it is the state at the time the
// watch starts, so nothing stored between the reader's Load and its Watch is
// missed); readers ignore generations they have. When the watch breaks
// (member down, no leader, compaction) it reloads the key, delivers it if it
// is newer than the last state delivered, and watches again from the
// revision of that read; while etcd is unreachable it retries with a short
// backoff. The channel is closed when ctx ends or the Store is closed.
func (s *Store) Watch(ctx context.Context) <-chan state.State {
	out := make(chan state.State, 1)
	if s.close.Load() {
		close(out)
		return out
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	s.wg.Go(func() {
		defer close(out)
		defer stop()
		defer cancel()
		s.watch(ctx, out)
	})
	return out
}

func (s *Store) watch(ctx context.Context, out chan state.State) {
	var seen int64 // mod revision of the last state delivered
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := s.get(ctx)
		if ctx.Err() != nil {
			return
		}
		s.setUp(err)
		if err != nil {
			s.log.Debug("etcd watch: reload failed, retrying", "key", s.key, "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 250*time.Millisecond)
			continue
		}
		backoff = 50 * time.Millisecond
		if len(resp.Kvs) == 1 && resp.Kvs[0].ModRevision > seen {
			seen = resp.Kvs[0].ModRevision
			s.deliver(out, resp.Kvs[0].Value)
		}
		from := resp.Header.Revision + 1
		err = s.follow(ctx, from, &seen, out)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("etcd watch broken; reloading and resuming", "key", s.key, "from_revision", from, "err", err)
	}
}

// follow watches the key from revision from until the watch breaks.
func (s *Store) follow(ctx context.Context, from int64, seen *int64, out chan state.State) error {
	cli := s.client()
	if cli == nil {
		return errors.New("not connected")
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, s.key, clientv3.WithRev(from)) {
		if err := wr.Err(); err != nil {
			return err
		}
		// Only the newest state of a response is delivered: a replica
		// that was cut off gets what was stored meanwhile in one
		// response, and must not route through the intermediate states.
		var last []byte
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut || ev.Kv.ModRevision <= *seen {
				continue
			}
			*seen = ev.Kv.ModRevision
			last = ev.Kv.Value
		}
		if last != nil {
			// The newest state is read before one is delivered: a replica
			// catching up after a partition may get the states stored
			// meanwhile one response at a time (a watch stream that
			// survived the partition hands over what it held back, each
			// response with the revision of its time, so nothing in it
			// says the store moved on), and must not route through them.
			// A read per switch costs one round trip.
			if resp, err := s.get(ctx); err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].ModRevision > *seen {
				*seen = resp.Kvs[0].ModRevision
				last = resp.Kvs[0].Value
			}
		}
		if last != nil {
			s.deliver(out, last)
		}
	}
	return errors.New("watch channel closed")
}

// deliver decodes a stored value and offers it to out, replacing a state
// the reader has not taken yet. Only the watch goroutine sends on out.
func (s *Store) deliver(out chan state.State, data []byte) {
	st, err := state.Decode(data)
	if err != nil {
		s.log.Error("etcd watch: ignoring a corrupt state", "key", s.key, "err", err)
		return
	}
	select {
	case out <- st:
		return
	default:
	}
	select {
	case <-out:
	default:
	}
	out <- st
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close ends every Watch (closing its channel), waits for their goroutines
// and closes the client. Calls after the first return nil.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.close.Store(true)
		s.closeCounts()
		s.stop()
		s.wg.Wait()
		if cli := s.client(); cli != nil {
			err = cli.Close()
			if errors.Is(err, context.Canceled) {
				err = nil
			}
		}
	})
	return err
}
