package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
)

// Exit codes of the client subcommands; see adminclient.ExitOK.
const (
	clientExitOK          = adminclient.ExitOK
	clientExitFailed      = adminclient.ExitFailed
	clientExitUsage       = adminclient.ExitUsage
	clientExitUnreachable = adminclient.ExitUnreachable
	clientExitSwitchedOff = adminclient.ExitSwitchedOff
)

// Environment of the client subcommands.
const (
	envAdminURL       = adminclient.EnvURL
	envAdminToken     = adminclient.EnvToken
	envAdminTokenFile = adminclient.EnvTokenFile
	defaultAdminURL   = adminclient.DefaultURL
)

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

// client returns the options of the admin client.
func (o clientOptions) client() adminclient.Options {
	return adminclient.Options{
		RetryMax:       o.retryMax,
		RetryWaitMin:   o.retryWaitMin,
		RetryWaitMax:   o.retryWaitMax,
		RequestTimeout: o.requestTimeout,
	}
}

func defaultClientOptions() clientOptions {
	d := adminclient.DefaultOptions()
	return clientOptions{
		retryMax:       d.RetryMax,
		retryWaitMin:   d.RetryWaitMin,
		retryWaitMax:   d.RetryWaitMax,
		requestTimeout: d.RequestTimeout,
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
		arg, hint := fs.Arg(0), ""
		if fs.Lookup("to") != nil && !strings.HasPrefix(arg, "-") {
			hint = " (the target colour is a flag: --to " + arg + ")" // "bluegreen cutover green"
		}
		fmt.Fprintf(c.stderr, "bluegreen %s: unexpected argument %q%s\n", c.name, arg, hint)
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
		fmt.Fprintf(c.stdout, "  %s  when %s is unset: the admin listener to probe (default 127.0.0.1:8081)\n", adminclient.EnvListen, envAdminURL)
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
func (c *clientCmd) connect(withToken bool) (*adminclient.Client, int) {
	ac, err := adminclient.FromEnv(c.getenv, withToken, c.o.client())
	if err != nil {
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", err)
		return nil, clientExitUsage
	}
	return ac, 0
}

// fail prints err and returns its exit code; asJSON also prints an error
// answer's body to stdout.
func (c *clientCmd) fail(err error, asJSON bool) int {
	var ue *adminclient.UnreachableError
	var ae *adminclient.APIError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "bluegreen: %v\n", ue)
		return adminclient.ExitCode(err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return c.errorf(clientExitFailed, "interrupted")
	case errors.As(err, &ae):
		if asJSON && len(ae.Raw) > 0 {
			c.printJSON(ae.Raw)
		}
		verb := "failed"
		if ae.Status >= 400 && ae.Status < 500 {
			verb = "refused"
		}
		hint := ""
		if ae.Status == http.StatusUnauthorized {
			hint = fmt.Sprintf("; check %s or %s", envAdminToken, envAdminTokenFile)
		}
		fmt.Fprintf(c.stderr, "bluegreen: %s %s: %v (HTTP %d%s)\n", c.name, verb, ae, ae.Status, hint)
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
