package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/proxy"
	"github.com/cryoprotect/bluegreen/state"
)

// envPrefix prefixes every configuration variable.
const envPrefix = "BLUEGREEN_"

// Config is the proxy's configuration, read from BLUEGREEN_* variables.
type Config struct {
	Listen              string        `env:"LISTEN" envDefault:":8080"`
	AdminListen         string        `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:8081"`
	BlueURLs            string        `env:"BLUE_URLS,required"`
	GreenURLs           string        `env:"GREEN_URLS,required"`
	InitialColor        string        `env:"INITIAL_COLOR" envDefault:"blue"`
	State               string        `env:"STATE" envDefault:"file:./bluegreen-state.json"`
	HealthPath          string        `env:"HEALTH_PATH" envDefault:"/health"`
	HealthInterval      time.Duration `env:"HEALTH_INTERVAL" envDefault:"2s"`
	HealthTimeout       time.Duration `env:"HEALTH_TIMEOUT" envDefault:"1s"`
	HealthRise          int           `env:"HEALTH_RISE" envDefault:"2"`
	HealthFall          int           `env:"HEALTH_FALL" envDefault:"3"`
	AdminToken          string        `env:"ADMIN_TOKEN"`
	AdminTokenFile      string        `env:"ADMIN_TOKEN_FILE"`
	AutoRollback        bool          `env:"AUTO_ROLLBACK" envDefault:"true"`
	RollbackWindow      time.Duration `env:"ROLLBACK_WINDOW" envDefault:"5m"`
	DrainTimeout        time.Duration `env:"DRAIN_TIMEOUT" envDefault:"30s"`
	LogFormat           string        `env:"LOG_FORMAT" envDefault:"auto"`
	LogLevel            string        `env:"LOG_LEVEL" envDefault:"info"`
	AccessLog           bool          `env:"ACCESS_LOG" envDefault:"false"`
	Preview             bool          `env:"PREVIEW" envDefault:"true"`
	PreviewHeader       string        `env:"PREVIEW_HEADER" envDefault:"X-Bluegreen-Preview"`
	PreviewCookie       string        `env:"PREVIEW_COOKIE" envDefault:"bluegreen_preview"`
	Balance             string        `env:"BALANCE" envDefault:"round-robin"`
	UpstreamIdleTimeout time.Duration `env:"UPSTREAM_IDLE_TIMEOUT" envDefault:"30s"`
	UpstreamTimeout     time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s"`
	OutlierConsecutive  int           `env:"OUTLIER_CONSECUTIVE" envDefault:"5"`
	OutlierEject        time.Duration `env:"OUTLIER_EJECT" envDefault:"30s"`
	TrustedProxies      string        `env:"TRUSTED_PROXIES"`
	PreviewStrip        bool          `env:"PREVIEW_STRIP" envDefault:"true"`
	PreviewFrom         string        `env:"PREVIEW_FROM" envDefault:"private"`
	ReadHeaderTimeout   time.Duration `env:"READ_HEADER_TIMEOUT" envDefault:"10s"`
	FastPath            bool          `env:"FAST_PATH" envDefault:"true"`
	Pprof               bool          `env:"PPROF" envDefault:"false"`
	ReplicaID           string        `env:"REPLICA_ID"`
	EtcdCAFile          string        `env:"ETCD_CA_FILE"`
	EtcdCertFile        string        `env:"ETCD_CERT_FILE"`
	EtcdKeyFile         string        `env:"ETCD_KEY_FILE"`
	EtcdUsername        string        `env:"ETCD_USERNAME"`
	EtcdPassword        string        `env:"ETCD_PASSWORD"`
	EtcdPasswordFile    string        `env:"ETCD_PASSWORD_FILE"`
	EtcdTimeout         time.Duration `env:"ETCD_TIMEOUT" envDefault:"2s"`
	EtcdLeaseTTL        time.Duration `env:"ETCD_LEASE_TTL" envDefault:"5s"`
	// Progressive delivery (rollout): how clients are keyed, how often a step is analysed.
	RolloutKey              string        `env:"ROLLOUT_KEY" envDefault:"cookie"`
	RolloutAnalysisInterval time.Duration `env:"ROLLOUT_ANALYSIS_INTERVAL" envDefault:"10s"`
	// Status page: where a passing health probe's answer carries the instance's version.
	HealthVersion string `env:"HEALTH_VERSION" envDefault:"header:X-App-Version"`

	// TLS termination, HTTP/2 and automatic certificates (config_tls.go).
	TLSListen      string `env:"TLS_LISTEN"`
	TLSCertFile    string `env:"TLS_CERT_FILE"`
	TLSKeyFile     string `env:"TLS_KEY_FILE"`
	ACMEDomains    string `env:"ACME_DOMAINS"`
	ACMEEmail      string `env:"ACME_EMAIL"`
	ACMECA         string `env:"ACME_CA"`
	ACMECARootFile string `env:"ACME_CA_ROOT_FILE"`
	ACMEStorage    string `env:"ACME_STORAGE" envDefault:"./acme"`
	HTTPRedirect   bool   `env:"HTTP_REDIRECT" envDefault:"false"`
	HSTS           string `env:"HSTS"`
	H2             string `env:"H2" envDefault:"fast"`
	tls            tlsOptions
	// Fleet: a replica's local copy of the state, a file state to migrate
	// into an empty etcd, how long to wait for etcd at start without a copy.
	StateCache       string        `env:"STATE_CACHE" envDefault:"./bluegreen-state-cache.json"`
	StateMigrateFrom string        `env:"STATE_MIGRATE_FROM"`
	EtcdStartWait    time.Duration `env:"ETCD_START_WAIT" envDefault:"30s"`
	// Graceful stop in two phases (shutdown.go).
	ShutdownDelay time.Duration `env:"SHUTDOWN_DELAY" envDefault:"5s"`

	// Data plane: client faults (proxy pipeline).
	ClientBodyTimeout time.Duration `env:"CLIENT_BODY_TIMEOUT" envDefault:"60s"`
	ClientSendTimeout time.Duration `env:"CLIENT_SEND_TIMEOUT" envDefault:"60s"`

	// Upstream connection pools: the most kept open per instance (config_pool.go).
	UpstreamMaxConns string `env:"UPSTREAM_MAX_CONNS"`
	upstreamMaxConns int

	// Derived by loadConfig.
	unknown     []unknownVariable // warned of at start-up
	blue, green []*url.URL
	lookup      lookupFunc // resolves instance host names (scaled.go); nil: the system's resolver
	token       string
	etcd        etcdOptions
	balance     proxy.Balance
	trusted     []netip.Prefix
	previewFrom []netip.Prefix // nil: any peer
}

// configError lists every bad variable, one line each.
type configError []string

func (e configError) Error() string { return strings.Join(e, "\n") }

// loadConfig reads and validates the configuration from environ (KEY=VALUE
// pairs). Each problem names the variable, the value and what is expected.
func loadConfig(environ []string, hostname func() (string, error)) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var cfg Config
	opts := env.Options{Prefix: envPrefix, Environment: vars}
	var problems configError
	if err := env.ParseWithOptions(&cfg, opts); err != nil {
		problems = append(problems, describeEnvErrors(err, cfg, vars)...)
	}
	bad := func(name, value, expected string) {
		if hasProblem(problems, name+"=") {
			return // the variable was already reported as unparseable
		}
		problems = append(problems, fmt.Sprintf("%s%s=%q: %s", envPrefix, name, value, expected))
	}

	cfg.unknown = unknownVariables(vars)
	var err error
	if _, set := vars[envPrefix+"BLUE_URLS"]; set {
		if cfg.blue, err = parseURLs(cfg.BlueURLs); err != nil {
			bad("BLUE_URLS", cfg.BlueURLs, err.Error())
		}
	}
	if _, set := vars[envPrefix+"GREEN_URLS"]; set {
		if cfg.green, err = parseURLs(cfg.GreenURLs); err != nil {
			bad("GREEN_URLS", cfg.GreenURLs, err.Error())
		}
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		bad("LISTEN", cfg.Listen, "expected host:port or :port")
	}
	if _, _, err := net.SplitHostPort(cfg.AdminListen); err != nil {
		bad("ADMIN_LISTEN", cfg.AdminListen, "expected host:port or :port")
	}
	if cfg.InitialColor != "blue" && cfg.InitialColor != "green" {
		bad("INITIAL_COLOR", cfg.InitialColor, `expected "blue" or "green"`)
	}
	if scheme, _, err := state.ParseSpec(cfg.State); err != nil {
		bad("STATE", cfg.State, "expected file:PATH or etcd://host:2379,host:2379/prefix")
	} else if scheme == "etcd" {
		problems = append(problems, cfg.loadEtcd(bad)...)
	}
	if !strings.HasPrefix(cfg.HealthPath, "/") {
		bad("HEALTH_PATH", cfg.HealthPath, "expected an absolute path such as /health")
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad(name, d.String(), "expected a positive duration such as 2s")
		}
	}
	positive("HEALTH_INTERVAL", cfg.HealthInterval)
	positive("HEALTH_TIMEOUT", cfg.HealthTimeout)
	positive("ROLLBACK_WINDOW", cfg.RollbackWindow)
	positive("DRAIN_TIMEOUT", cfg.DrainTimeout)
	cfg.checkClientFaults(bad)
	cfg.checkUpstreamPool(bad, nofileLimit)
	positive("UPSTREAM_IDLE_TIMEOUT", cfg.UpstreamIdleTimeout)
	positive("OUTLIER_EJECT", cfg.OutlierEject)
	positive("READ_HEADER_TIMEOUT", cfg.ReadHeaderTimeout)
	validateShutdown(cfg, bad)
	if cfg.UpstreamTimeout < 0 {
		bad("UPSTREAM_TIMEOUT", cfg.UpstreamTimeout.String(), "expected a duration of at least 0 (0: no limit)")
	}
	if cfg.OutlierConsecutive < 0 {
		bad("OUTLIER_CONSECUTIVE", fmt.Sprint(cfg.OutlierConsecutive), "expected an integer of at least 0 (0 disables outlier detection)")
	}
	if cfg.trusted, err = parsePrefixes(cfg.TrustedProxies); err != nil {
		bad("TRUSTED_PROXIES", cfg.TrustedProxies, err.Error())
	}
	if cfg.previewFrom, err = parsePreviewFrom(cfg.PreviewFrom); err != nil {
		bad("PREVIEW_FROM", cfg.PreviewFrom, err.Error())
	}
	if cfg.HealthRise < 1 {
		bad("HEALTH_RISE", fmt.Sprint(cfg.HealthRise), "expected an integer of at least 1")
	}
	if cfg.HealthFall < 1 {
		bad("HEALTH_FALL", fmt.Sprint(cfg.HealthFall), "expected an integer of at least 1")
	}
	switch cfg.LogFormat {
	case "auto", "json", "text", "ecs":
	default:
		bad("LOG_FORMAT", cfg.LogFormat, `expected "auto", "json", "text" or "ecs"`)
	}
	if _, err := parseLevel(cfg.LogLevel); err != nil {
		bad("LOG_LEVEL", cfg.LogLevel, `expected "debug", "info", "warn" or "error"`)
	}
	if cfg.balance, err = proxy.ParseBalance(cfg.Balance); err != nil {
		bad("BALANCE", cfg.Balance, fmt.Sprintf("expected %q or %q", proxy.RoundRobin, proxy.LeastInflight))
	}
	if cfg.Preview && cfg.PreviewHeader == "" && cfg.PreviewCookie == "" {
		bad("PREVIEW", "true", "preview needs BLUEGREEN_PREVIEW_HEADER or BLUEGREEN_PREVIEW_COOKIE")
	}
	if cfg.PreviewHeader != "" && !validToken(cfg.PreviewHeader) {
		bad("PREVIEW_HEADER", cfg.PreviewHeader, "expected an HTTP header name")
	}
	if cfg.PreviewCookie != "" && !validToken(cfg.PreviewCookie) {
		bad("PREVIEW_COOKIE", cfg.PreviewCookie, "expected a cookie name")
	}
	cfg.checkRollout(bad)

	switch {
	case cfg.AdminToken != "" && cfg.AdminTokenFile != "":
		problems = append(problems, envPrefix+"ADMIN_TOKEN and "+envPrefix+"ADMIN_TOKEN_FILE are both set: set only one")
	case cfg.AdminTokenFile != "":
		b, err := os.ReadFile(cfg.AdminTokenFile)
		switch {
		case err != nil:
			bad("ADMIN_TOKEN_FILE", cfg.AdminTokenFile, "cannot read the token file: "+shortFileError(err))
		case strings.TrimSpace(string(b)) == "":
			bad("ADMIN_TOKEN_FILE", cfg.AdminTokenFile, "the token file is empty")
		default:
			cfg.token = strings.TrimSpace(string(b))
		}
	default:
		cfg.token = cfg.AdminToken
	}
	tokenProblem := hasProblem(problems, "ADMIN_TOKEN") // a token variable was already reported
	if cfg.token == "" && !admin.LoopbackHost(cfg.AdminListen) && !hasProblem(problems, "ADMIN_TOKEN") {
		bad("ADMIN_LISTEN", cfg.AdminListen, "the admin listener is not loopback-only: set BLUEGREEN_ADMIN_TOKEN or BLUEGREEN_ADMIN_TOKEN_FILE")
	}
	// Profiles are never served without the token, even on loopback.
	if cfg.Pprof && cfg.token == "" && !tokenProblem {
		bad("PPROF", vars[envPrefix+"PPROF"], "profiling needs the admin token: set BLUEGREEN_ADMIN_TOKEN or BLUEGREEN_ADMIN_TOKEN_FILE")
	}
	cfg.checkUI(bad)
	cfg.loadTLS(bad)
	if cfg.ReplicaID == "" && hostname != nil {
		cfg.ReplicaID, _ = hostname()
	}
	if len(problems) > 0 {
		return cfg, problems
	}
	return cfg, nil
}

func hasProblem(ps []string, name string) bool {
	for _, p := range ps {
		if strings.Contains(p, envPrefix+name) {
			return true
		}
	}
	return false
}

// describeEnvErrors turns the env library's errors into lines that name the
// variable and the expected form.
func describeEnvErrors(err error, cfg Config, vars map[string]string) []string {
	keys := map[string]string{}
	t := reflect.TypeOf(cfg)
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("env"); tag != "" {
			name, _, _ := strings.Cut(tag, ",")
			keys[t.Field(i).Name] = envPrefix + name
		}
	}
	var out []string
	var agg env.AggregateError
	errs := []error{err}
	if errors.As(err, &agg) {
		errs = agg.Errors
	}
	for _, e := range errs {
		var pe env.ParseError
		var ns env.VarIsNotSetError
		switch {
		case errors.As(e, &pe):
			key := keys[pe.Name]
			out = append(out, fmt.Sprintf("%s=%q: %s", key, vars[key], expectedFor(pe.Type)))
		case errors.As(e, &ns):
			out = append(out, fmt.Sprintf("%s is required: comma-separated backend base URLs such as http://app-blue:5000", ns.Key))
		default:
			out = append(out, e.Error())
		}
	}
	return out
}

func expectedFor(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "expected a duration such as 2s, 500ms or 5m"
	case reflect.TypeFor[int]():
		return "expected an integer"
	case reflect.TypeFor[bool]():
		return "expected true or false"
	}
	return "expected a " + t.String()
}

// parseURLs parses a comma-separated list of backend base URLs.
func parseURLs(s string) ([]*url.URL, error) {
	var out []*url.URL
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%q is not a backend URL: expected http://host:port[/base]", part)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%q: a backend URL takes no user info, query or fragment", part)
		}
		if !validPort(u) {
			return nil, fmt.Errorf("%q: the port must be a number from 1 to 65535", part)
		}
		if seen[u.String()] {
			return nil, fmt.Errorf("%q is listed twice", part)
		}
		seen[u.String()] = true
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("expected at least one backend URL")
	}
	return out, nil
}

// validPort reports whether u's port, when it names one, is 1 to 65535;
// "http://app:" names an empty one.
func validPort(u *url.URL) bool {
	p := u.Port()
	if p == "" {
		return !strings.HasSuffix(u.Host, ":")
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// sharedInstances are the instance URLs listed in both colours, for a
// warning at start-up: a switch does not change what serves the requests
// such an instance gets (a copied line, most likely; allowed, so that one
// deployment can stand in for both while the second is built).
func (c Config) sharedInstances() []string {
	blue := map[string]bool{}
	for _, u := range c.blue {
		blue[u.String()] = true
	}
	var out []string
	for _, u := range c.green {
		if blue[u.String()] {
			out = append(out, u.String())
		}
	}
	return out
}

func validToken(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return s != ""
}

func shortFileError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// privateNets are the networks "private" names in BLUEGREEN_PREVIEW_FROM:
// loopback, RFC 1918 and RFC 6598 (carrier-grade NAT, which Docker and
// cloud networks use too), link-local, and IPv6's unique local and
// link-local addresses.
var privateNets = []string{"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"}

// parsePreviewFrom reads BLUEGREEN_PREVIEW_FROM: "any" (nil: every peer),
// or addresses and prefixes, among which "private" stands for privateNets.
func parsePreviewFrom(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "any" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	for i, part := range parts {
		if strings.TrimSpace(part) == "private" {
			parts[i] = strings.Join(privateNets, ",")
		}
	}
	out, err := parsePrefixes(strings.Join(parts, ","))
	if err == nil && len(out) == 0 {
		err = errors.New(`expected "private", "any", or addresses and CIDR prefixes such as private,203.0.113.7`)
	}
	return out, err
}

// parsePrefixes parses a comma-separated list of CIDR prefixes or single
// addresses (10.0.0.0/8, 192.168.1.5, fd00::/8).
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an address or CIDR prefix: expected a list such as 10.0.0.0/8,192.168.1.5", part)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
