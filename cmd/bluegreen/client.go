package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/state"
)

// Exit codes of the client subcommands (status, cutover, rollback, history,
// healthcheck):
//
//	0  success
//	1  the operation was refused or failed: a 4xx/5xx answer, --wait-healthy
//	   timed out, the healthcheck failed
//	2  bad usage or configuration: a bad flag, a bad environment value, an
//	   unreadable token file
//	3  the admin API cannot be reached (after retries)
//	4  the active colour switched away from the target during --watch
//	   (an auto-rollback, or any other switch)
//
// healthcheck exits only 0 or 1, whatever goes wrong, because Docker reserves
// exit status 2 of a HEALTHCHECK command.
const (
	clientExitOK          = 0
	clientExitFailed      = 1
	clientExitUsage       = 2
	clientExitUnreachable = 3
	clientExitSwitchedOff = 4
)

// Environment of the client subcommands.
const (
	envAdminURL       = "BLUEGREEN_ADMIN_URL"
	envAdminToken     = "BLUEGREEN_ADMIN_TOKEN"
	envAdminTokenFile = "BLUEGREEN_ADMIN_TOKEN_FILE"
	defaultAdminURL   = "http://127.0.0.1:8081"
)

// maxAnswerBytes bounds how much of an admin answer the client reads.
const maxAnswerBytes = 4 << 20

// clientOptions are the knobs of the client subcommands that tests shrink.
type clientOptions struct {
	retryMax       int           // retries after the first attempt
	retryWaitMin   time.Duration // first wait between attempts
	retryWaitMax   time.Duration // longest wait between attempts
	requestTimeout time.Duration // one attempt of one admin call
	healthTimeout  time.Duration // the whole healthcheck call
	pollEvery      time.Duration // longest time between two polls of --wait-healthy
	watchEvery     time.Duration // longest time between two polls of --watch
	now            func() time.Time
}

func defaultClientOptions() clientOptions {
	return clientOptions{
		retryMax:       3,
		retryWaitMin:   200 * time.Millisecond,
		retryWaitMax:   2 * time.Second,
		requestTimeout: 10 * time.Second,
		healthTimeout:  2 * time.Second,
		pollEvery:      500 * time.Millisecond,
		watchEvery:     time.Second,
		now:            time.Now,
	}
}

// runClient runs one client subcommand against the admin API and returns the
// process exit code. cmd is one of "status", "cutover", "rollback", "history",
// "healthcheck".
func runClient(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runClientWith(ctx, defaultClientOptions(), cmd, args, getenv, stdout, stderr)
}

// runClientWith is runClient with explicit options.
func runClientWith(ctx context.Context, o clientOptions, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if o.now == nil {
		o.now = time.Now
	}
	c := &clientCmd{name: cmd, o: o, getenv: getenv, stdout: stdout, stderr: stderr}
	switch cmd {
	case "status":
		return c.status(ctx, args)
	case "history":
		return c.history(ctx, args)
	case "cutover":
		return c.cutover(ctx, args)
	case "rollback":
		return c.rollback(ctx, args)
	case "healthcheck":
		return c.healthcheck(ctx, args)
	case "rollout":
		return c.rollout(ctx, args)
	}
	fmt.Fprintf(stderr, "bluegreen: unknown client command %q\n", cmd)
	return clientExitUsage
}

// clientCmd is one run of one client subcommand.
type clientCmd struct {
	name   string
	o      clientOptions
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// clientHelp is the help text of a subcommand; the flags are appended.
type clientHelp struct {
	synopsis string // after "Usage: "
	about    string
	token    bool // the subcommand sends the token
}

func (c *clientCmd) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("bluegreen "+c.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {} // help goes to stdout, below; errors are followed by a hint
	return fs
}

// parse parses args. When done is true the subcommand ends with code: after
// --help (0) or a bad flag or argument (badUsage).
func (c *clientCmd) parse(fs *flag.FlagSet, h clientHelp, args []string, badUsage int) (code int, done bool) {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(fs, h)
		return clientExitOK, true
	}
	if err == nil && fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "bluegreen %s: unexpected argument %q\n", c.name, fs.Arg(0))
		err = errors.New("unexpected argument")
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "Run 'bluegreen %s --help' for usage.\n", c.name)
		return badUsage, true
	}
	return 0, false
}

func (c *clientCmd) printHelp(fs *flag.FlagSet, h clientHelp) {
	fmt.Fprintf(c.stdout, "Usage: %s\n\n%s\n\nFlags:\n", h.synopsis, strings.TrimSpace(h.about))
	fs.SetOutput(c.stdout)
	fs.PrintDefaults()
	fs.SetOutput(c.stderr)
	fmt.Fprintf(c.stdout, "\nEnvironment:\n  %s  admin API base URL (default %s)\n", envAdminURL, defaultAdminURL)
	if h.token {
		fmt.Fprintf(c.stdout, "  %s or %s  bearer token for the admin API\n", envAdminToken, envAdminTokenFile)
	}
	if c.name == "healthcheck" {
		fmt.Fprint(c.stdout, "\nExit status: 0 healthy, 1 anything else.\n")
		return
	}
	fmt.Fprint(c.stdout, "\nExit status: 0 success, 1 refused or failed, 2 bad usage or configuration,\n3 admin API unreachable")
	if c.name == "cutover" {
		fmt.Fprint(c.stdout, ", 4 switched away from the target during --watch")
	}
	fmt.Fprint(c.stdout, ".\n")
}

// errorf prints one line about this subcommand to stderr and returns code.
func (c *clientCmd) errorf(code int, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "bluegreen: %s: %s\n", c.name, fmt.Sprintf(format, args...))
	return code
}

// connect reads the client environment and returns the admin client, or nil
// and the exit code after printing why not.
func (c *clientCmd) connect(withToken bool) (*adminClient, int) {
	base, err := adminURLFromEnv(c.getenv)
	if err != nil {
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", err)
		return nil, clientExitUsage
	}
	token := ""
	if withToken {
		if token, err = adminTokenFromEnv(c.getenv); err != nil {
			fmt.Fprintf(c.stderr, "bluegreen: %v\n", err)
			return nil, clientExitUsage
		}
	}
	return newAdminClient(base, token, c.o), 0
}

// adminURLFromEnv returns BLUEGREEN_ADMIN_URL, or its default.
func adminURLFromEnv(getenv func(string) string) (*url.URL, error) {
	raw := strings.TrimSpace(getenv(envAdminURL))
	if raw == "" {
		raw = defaultAdminURL
	}
	shown := fmt.Sprintf(" %q", raw)
	if strings.Contains(raw, "@") {
		shown = "" // may carry a password
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s%s is not a valid URL (%v): expected an http:// or https:// URL such as %s", envAdminURL, shown, err, defaultAdminURL)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s%s is not valid: expected an http:// or https:// URL with a host, such as %s", envAdminURL, shown, defaultAdminURL)
	}
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// adminTokenFromEnv returns the token from BLUEGREEN_ADMIN_TOKEN or the file
// named by BLUEGREEN_ADMIN_TOKEN_FILE (trailing white space trimmed), or ""
// when neither is set. Errors never contain the token.
func adminTokenFromEnv(getenv func(string) string) (string, error) {
	tok, file := getenv(envAdminToken), getenv(envAdminTokenFile)
	if tok != "" && file != "" {
		return "", fmt.Errorf("both %s and %s are set: set only one", envAdminToken, envAdminTokenFile)
	}
	from := envAdminToken
	if file != "" {
		from = envAdminTokenFile
		data, err := os.ReadFile(file)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return "", fmt.Errorf("%s: cannot read %s: %v", envAdminTokenFile, file, err)
		}
		tok = strings.TrimRight(string(data), " \t\r\n")
		if tok == "" {
			return "", fmt.Errorf("%s: %s is empty", envAdminTokenFile, file)
		}
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fmt.Errorf("%s: the token contains a line break or another control character", from)
	}
	return tok, nil
}

// adminClient calls the admin API. Reads are retried on connection errors and
// gateway answers; a switch is retried the same way, which is safe because
// every switch names its target colour: a repeated switch answers "no change".
// An adminClient is used by one goroutine at a time.
type adminClient struct {
	base  *url.URL
	token string // sent only on POST
	http  *retryablehttp.Client
}

func newAdminClient(base *url.URL, token string, o clientOptions) *adminClient {
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryMax = o.retryMax
	rc.RetryWaitMin = o.retryWaitMin
	rc.RetryWaitMax = o.retryWaitMax
	rc.CheckRetry = adminRetryPolicy
	rc.Backoff = cappedBackoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.HTTPClient.Timeout = o.requestTimeout
	rc.HTTPClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &adminClient{base: base, token: token, http: rc}
}

// adminRetryPolicy is a retryablehttp.CheckRetry: it retries connection
// errors (as retryablehttp.DefaultRetryPolicy does) and the answers 502, 503
// and 504, never another answer, and stops when ctx ends.
func adminRetryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, nil
	}
	return false, nil
}

// cappedBackoff is retryablehttp.DefaultBackoff with a Retry-After answer
// capped at max, so a proxy in front cannot make the client sleep for long.
func cappedBackoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	return min(retryablehttp.DefaultBackoff(minWait, maxWait, attempt, resp), maxWait)
}

func (a *adminClient) close() { a.http.HTTPClient.CloseIdleConnections() }

// unreachableError reports that no answer came back, after retries.
type unreachableError struct {
	base *url.URL
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s: %s", e.base.Redacted(), shortNetCause(e.err))
}

func (e *unreachableError) Unwrap() error { return e.err }

// apiError is a non-2xx answer.
type apiError struct {
	status int
	body   admin.ErrorBody // zero when the answer was not an error body
	raw    []byte
}

func (e *apiError) Error() string {
	msg := e.body.Error
	if msg == "" {
		msg = "the admin API answered " + strconv.Itoa(e.status) + " " + http.StatusText(e.status)
	}
	return msg
}

// shortNetCause turns a transport error into a few words.
func shortNetCause(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "cannot resolve " + dns.Name + ": " + dns.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// do calls the admin API and returns the body of a 2xx answer. Errors are an
// *unreachableError, an *apiError, ctx's error, or a local one.
func (a *adminClient) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	u := a.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var raw any
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		raw = b
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), raw)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPost && a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &unreachableError{base: a.base, err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading the answer to %s %s: %s", method, u.Path, shortNetCause(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &apiError{status: resp.StatusCode, raw: data}
		_ = json.Unmarshal(data, &e.body)
		return nil, e
	}
	return data, nil
}

// status calls GET /admin/status and returns the answer decoded and as received.
func (a *adminClient) status(ctx context.Context) (admin.Status, []byte, error) {
	var st admin.Status
	data, err := a.do(ctx, http.MethodGet, "admin/status", nil, nil)
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, nil, fmt.Errorf("the status answer is not valid: %w", err)
	}
	return st, data, nil
}

// historyAnswer is the answer of GET /admin/history.
type historyAnswer struct {
	History []state.Event `json:"history"`
}

// history calls GET /admin/history; limit 0 asks for every switch.
func (a *adminClient) history(ctx context.Context, limit int) ([]state.Event, []byte, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var h historyAnswer
	data, err := a.do(ctx, http.MethodGet, "admin/history", q, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, nil, fmt.Errorf("the history answer is not valid: %w", err)
	}
	return h.History, data, nil
}

// post sends a switch request to path ("admin/cutover" or "admin/rollback").
func (a *adminClient) post(ctx context.Context, path string, body admin.SwitchRequest) (admin.Status, []byte, error) {
	var st admin.Status
	data, err := a.do(ctx, http.MethodPost, path, nil, body)
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, nil, fmt.Errorf("the %s answer is not valid: %w", path, err)
	}
	return st, data, nil
}

// fail prints err and returns its exit code; asJSON also prints an error
// answer's body to stdout.
func (c *clientCmd) fail(err error, asJSON bool) int {
	var ue *unreachableError
	var ae *apiError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", ue)
		return clientExitUnreachable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return c.errorf(clientExitFailed, "interrupted")
	case errors.As(err, &ae):
		if asJSON && len(ae.raw) > 0 {
			c.printJSON(ae.raw)
		}
		verb := "failed"
		if ae.status >= 400 && ae.status < 500 {
			verb = "refused"
		}
		hint := ""
		if ae.status == http.StatusUnauthorized {
			hint = fmt.Sprintf("; check %s or %s", envAdminToken, envAdminTokenFile)
		}
		fmt.Fprintf(c.stderr, "bluegreen: %s %s: %v (HTTP %d%s)\n", c.name, verb, ae, ae.status, hint)
		return clientExitFailed
	}
	return c.errorf(clientExitFailed, "%v", err)
}

// printJSON writes a JSON answer to stdout, indented.
func (c *clientCmd) printJSON(raw []byte) int {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		buf.Reset()
		buf.Write(bytes.TrimSpace(raw))
	}
	buf.WriteByte('\n')
	c.stdout.Write(buf.Bytes())
	return clientExitOK
}

// colorNames returns the colours of st in a stable order.
func colorNames(st admin.Status) []string {
	names := make([]string, 0, len(st.Colors))
	for name := range st.Colors {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// healthSummary is e.g. "blue 2/2 healthy, green 0/1 healthy".
func healthSummary(st admin.Status) string {
	parts := make([]string, 0, len(st.Colors))
	for _, name := range colorNames(st) {
		cs := st.Colors[name]
		parts = append(parts, fmt.Sprintf("%s %d/%d healthy", name, cs.Healthy, cs.Total))
	}
	return strings.Join(parts, ", ")
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// writeStatus prints st for people.
func writeStatus(w io.Writer, st admin.Status, now time.Time) {
	fmt.Fprintf(w, "active: %s (generation %d, applied %d, since %s)\n", st.Active, st.Generation, st.AppliedGeneration, formatTime(st.ChangedAt))
	prev := st.Previous
	if prev == "" {
		prev = "none"
	}
	fmt.Fprintf(w, "previous: %s\n", prev)
	if st.Replica != "" || st.Version != "" {
		var parts []string
		if st.Replica != "" {
			parts = append(parts, "replica "+st.Replica)
		}
		if st.Version != "" {
			parts = append(parts, "version "+st.Version)
		}
		fmt.Fprintf(w, "server: %s\n", strings.Join(parts, ", "))
	}
	names := colorNames(st)
	nameWidth, urlWidth := 0, 0
	for _, name := range names {
		nameWidth = max(nameWidth, len(name)+1)
		for _, in := range st.Colors[name].Instances {
			urlWidth = max(urlWidth, len(in.URL))
		}
	}
	for _, name := range names {
		cs := st.Colors[name]
		fmt.Fprintf(w, "%-*s %d/%d healthy\n", nameWidth, name+":", cs.Healthy, cs.Total)
		for _, in := range cs.Instances {
			health := "down"
			if in.Healthy {
				health = "up"
			}
			checked := "never checked"
			if !in.LastCheck.IsZero() {
				checked = "checked " + max(now.Sub(in.LastCheck), 0).Round(time.Second).String() + " ago"
			}
			line := fmt.Sprintf("  %-*s  %-4s  %s", urlWidth, in.URL, health, checked)
			if in.LastError != "" {
				line += "  last error: " + in.LastError
			}
			fmt.Fprintln(w, line)
		}
	}
}

func (c *clientCmd) status(ctx context.Context, args []string) int {
	fs := c.flagSet()
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen status [--json]",
		about:    "Shows the active colour, the previous one, and the health of every instance.",
	}, args, clientExitUsage); done {
		return code
	}
	ac, code := c.connect(false)
	if ac == nil {
		return code
	}
	defer ac.close()
	st, raw, err := ac.status(ctx)
	if err != nil {
		return c.fail(err, false)
	}
	if *asJSON {
		return c.printJSON(raw)
	}
	writeStatus(c.stdout, st, c.o.now())
	return clientExitOK
}

func (c *clientCmd) history(ctx context.Context, args []string) int {
	fs := c.flagSet()
	limit := fs.Int("limit", 20, "show at most `N` switches, newest first")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen history [--limit N] [--json]",
		about:    "Lists the recent switches of the active colour, newest first.",
	}, args, clientExitUsage); done {
		return code
	}
	if *limit < 1 {
		return c.errorf(clientExitUsage, "--limit must be at least 1, got %d", *limit)
	}
	ac, code := c.connect(false)
	if ac == nil {
		return code
	}
	defer ac.close()
	events, raw, err := ac.history(ctx, *limit)
	if err != nil {
		return c.fail(err, false)
	}
	if *asJSON {
		return c.printJSON(raw)
	}
	if len(events) == 0 {
		fmt.Fprintln(c.stdout, "no switches recorded yet")
		return clientExitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTION\tFROM -> TO\tTRIGGER\tGENERATION\tREASON")
	for _, e := range events {
		action := e.Action
		if e.Forced {
			action += " (forced)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%s\t%d\t%s\n", formatTime(e.Time), action, e.From, e.To, e.Trigger, e.Generation, cmp.Or(oneLine(e.Reason), "-"))
	}
	tw.Flush()
	return clientExitOK
}

// oneLine keeps a reason on one table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// pollInterval is the time between two polls of a wait of d: at most every,
// and at least ten polls over d.
func pollInterval(every, d time.Duration) time.Duration {
	return max(min(every, d/10), time.Millisecond)
}

// progress is where progress lines go: stdout, or stderr when stdout carries JSON.
func (c *clientCmd) progress(asJSON bool) io.Writer {
	if asJSON {
		return c.stderr
	}
	return c.stdout
}

// printSwitch prints the outcome of a switch.
func (c *clientCmd) printSwitch(w io.Writer, res admin.Status, target string) {
	if res.Changed != nil && !*res.Changed {
		fmt.Fprintf(w, "%s: already on %s (no change)\n", c.name, res.Active)
		return
	}
	from := res.Previous
	if from == "" {
		from = "?"
	}
	fmt.Fprintf(w, "%s: %s -> %s (generation %d)\n", c.name, from, res.Active, res.Generation)
	if res.Active != target {
		fmt.Fprintf(c.stderr, "bluegreen: %s: warning: asked for %s, the admin API reports %s active\n", c.name, target, res.Active)
	}
}

func (c *clientCmd) cutover(ctx context.Context, args []string) int {
	fs := c.flagSet()
	to := fs.String("to", "", "target `colour` (default: the colour that is not active)")
	force := fs.Bool("force", false, "switch even when the target has no healthy instance")
	reason := fs.String("reason", "", "reason recorded in the history")
	waitHealthy := fs.Duration("wait-healthy", 0, "first wait up to this `duration` for the target to have a healthy instance")
	watch := fs.Duration("watch", 0, "after the switch, watch for this `duration` that the target stays active (exit 4 if not)")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen cutover [--to C] [--force] [--reason R] [--wait-healthy D] [--watch D] [--json]",
		about: `Switches live traffic to the target colour. The admin API refuses (exit 1)
when the target has no healthy instance, unless --force is given.`,
		token: true,
	}, args, clientExitUsage); done {
		return code
	}
	if *waitHealthy < 0 || *watch < 0 {
		return c.errorf(clientExitUsage, "--wait-healthy and --watch must not be negative")
	}
	ac, code := c.connect(true)
	if ac == nil {
		return code
	}
	defer ac.close()
	info := c.progress(*asJSON)

	st, _, err := ac.status(ctx)
	if err != nil {
		return c.fail(err, false)
	}
	target := *to
	if target == "" {
		for _, name := range colorNames(st) {
			if name != st.Active {
				target = name
				break
			}
		}
		if target == "" {
			return c.errorf(clientExitFailed, "cannot tell which colour is idle (active is %s); use --to", st.Active)
		}
	} else if _, ok := st.Colors[target]; !ok {
		return c.errorf(clientExitUsage, "unknown colour %q for --to: expected one of %s", target, strings.Join(colorNames(st), ", "))
	}

	if *waitHealthy > 0 && target != st.Active {
		if code, ok := c.waitHealthy(ctx, ac, info, st, target, *waitHealthy); !ok {
			return code
		}
	}

	res, raw, err := ac.post(ctx, "admin/cutover", admin.SwitchRequest{
		To: target, Force: *force, Reason: *reason, Trigger: state.TriggerCLI,
	})
	if err != nil {
		return c.fail(err, *asJSON)
	}
	if *asJSON {
		c.printJSON(raw)
	}
	c.printSwitch(info, res, target)
	if *watch > 0 {
		return c.watch(ctx, ac, info, res, target, *watch)
	}
	return clientExitOK
}

// waitHealthy polls the status until target has a healthy instance. ok is
// false when the cutover must stop with code.
func (c *clientCmd) waitHealthy(ctx context.Context, ac *adminClient, info io.Writer, st admin.Status, target string, d time.Duration) (code int, ok bool) {
	if st.Colors[target].Healthy > 0 {
		return 0, true
	}
	fmt.Fprintf(info, "waiting up to %s for %s to have a healthy instance (%d/%d healthy)\n", d, target, st.Colors[target].Healthy, st.Colors[target].Total)
	start := c.o.now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval(c.o.pollEvery, d))
	defer tick.Stop()
	for st.Colors[target].Healthy == 0 {
		select {
		case <-ctx.Done():
			return c.errorf(clientExitFailed, "interrupted while waiting for %s to become healthy", target), false
		case <-deadline.C:
			cs := st.Colors[target]
			return c.errorf(clientExitFailed, "%s has no healthy instance after waiting %s (%d/%d healthy); not switching", target, d, cs.Healthy, cs.Total), false
		case <-tick.C:
		}
		var err error
		if st, _, err = ac.status(ctx); err != nil {
			return c.fail(err, false), false
		}
	}
	cs := st.Colors[target]
	fmt.Fprintf(info, "%s is healthy (%d/%d) after %s\n", target, cs.Healthy, cs.Total, c.o.now().Sub(start).Round(time.Millisecond))
	return 0, true
}

// watch polls the status for d after a cutover to target and reports every
// change of health; it ends early, with exit code 4, when target stops being
// the active colour.
func (c *clientCmd) watch(ctx context.Context, ac *adminClient, info io.Writer, st admin.Status, target string, d time.Duration) int {
	if st.Active != target {
		return c.switchedAway(ctx, ac, st, target)
	}
	fmt.Fprintf(info, "watch: watching %s for %s (%s)\n", target, d, healthSummary(st))
	last := healthSummary(st)
	start := c.o.now()
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(pollInterval(c.o.watchEvery, d))
	defer tick.Stop()
	for {
		final := false
		select {
		case <-ctx.Done():
			return c.errorf(clientExitFailed, "watch interrupted; %s was still active", target)
		case <-tick.C:
		case <-end.C:
			final = true
		}
		st, _, err := ac.status(ctx)
		if err != nil {
			return c.fail(err, false)
		}
		if st.Active != target {
			return c.switchedAway(ctx, ac, st, target)
		}
		if now := healthSummary(st); now != last {
			fmt.Fprintf(info, "watch: %s (after %s)\n", now, c.o.now().Sub(start).Round(time.Millisecond))
			last = now
		}
		if final {
			fmt.Fprintf(info, "watch: %s stayed active for %s\n", target, d)
			return clientExitOK
		}
	}
}

// switchedAway reports the switch that moved the active colour off target.
func (c *clientCmd) switchedAway(ctx context.Context, ac *adminClient, st admin.Status, target string) int {
	msg := fmt.Sprintf("%s is no longer active: %s is (generation %d)", target, st.Active, st.Generation)
	if events, _, err := ac.history(ctx, 1); err == nil && len(events) > 0 {
		e := events[0]
		msg = fmt.Sprintf("%s is no longer active: %s %s -> %s by %s (generation %d)", target, e.Action, e.From, e.To, e.Trigger, e.Generation)
		if e.Reason != "" {
			msg += ": " + oneLine(e.Reason)
		}
	}
	fmt.Fprintf(c.stderr, "bluegreen: watch: %s\n", msg)
	return clientExitSwitchedOff
}

func (c *clientCmd) rollback(ctx context.Context, args []string) int {
	fs := c.flagSet()
	force := fs.Bool("force", false, "switch even when the previous colour has no healthy instance")
	reason := fs.String("reason", "", "reason recorded in the history")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen rollback [--force] [--reason R] [--json]",
		about: `Switches live traffic back to the previous colour. The admin API refuses
(exit 1) when there is no previous colour, or when it has no healthy
instance, unless --force is given.`,
		token: true,
	}, args, clientExitUsage); done {
		return code
	}
	ac, code := c.connect(true)
	if ac == nil {
		return code
	}
	defer ac.close()
	st, _, err := ac.status(ctx)
	if err != nil {
		return c.fail(err, false)
	}
	// Name the target, so a retried request cannot roll back twice.
	res, raw, err := ac.post(ctx, "admin/rollback", admin.SwitchRequest{
		To: st.Previous, Force: *force, Reason: *reason, Trigger: state.TriggerCLI,
	})
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.body.Code == "no_previous" {
			if *asJSON {
				c.printJSON(ae.raw)
			}
			fmt.Fprintf(c.stderr, "bluegreen: rollback refused: %v: %s has been the only active colour so far (HTTP %d)\n", ae, st.Active, ae.status)
			return clientExitFailed
		}
		return c.fail(err, *asJSON)
	}
	if *asJSON {
		c.printJSON(raw)
	}
	c.printSwitch(c.progress(*asJSON), res, res.Active)
	return clientExitOK
}

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
at most 2s, no output on success: meant for a Docker HEALTHCHECK.`,
	}, args, clientExitFailed); done {
		return code
	}
	base, err := adminURLFromEnv(c.getenv)
	if err != nil {
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", err)
		return clientExitFailed
	}
	path := "readyz"
	if *live {
		path = "healthz"
	}
	u := base.JoinPath(path)
	ctx, cancel := context.WithTimeout(ctx, c.o.healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return c.errorf(clientExitFailed, "%v", err)
	}
	tr := &http.Transport{DisableKeepAlives: true} // no proxy, no pooled connection
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		Timeout:       c.o.healthTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := hc.Do(req)
	if err != nil {
		return c.errorf(clientExitFailed, "cannot reach %s: %s", u.Redacted(), shortNetCause(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return clientExitOK
	}
	var body struct {
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}
	_ = json.Unmarshal(data, &body)
	why := body.Reason
	if why == "" {
		why = body.Error
	}
	if why != "" {
		why = ": " + oneLine(why)
	}
	return c.errorf(clientExitFailed, "/%s answered %s%s", path, resp.Status, why)
}
