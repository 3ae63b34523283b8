package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
	"github.com/cryoprotect/bluegreen/state"
)

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
	defer ac.Close()
	info := c.progress(*asJSON)

	st, _, err := ac.Status(ctx)
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

	res, raw, err := ac.Cutover(ctx, admin.SwitchRequest{
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
func (c *clientCmd) waitHealthy(ctx context.Context, ac *adminclient.Client, info io.Writer, st admin.Status, target string, d time.Duration) (code int, ok bool) {
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
		if st, _, err = ac.Status(ctx); err != nil {
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
func (c *clientCmd) watch(ctx context.Context, ac *adminclient.Client, info io.Writer, st admin.Status, target string, d time.Duration) int {
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
		st, _, err := ac.Status(ctx)
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
func (c *clientCmd) switchedAway(ctx context.Context, ac *adminclient.Client, st admin.Status, target string) int {
	msg := fmt.Sprintf("%s is no longer active: %s is (generation %d)", target, st.Active, st.Generation)
	if events, _, err := ac.History(ctx, 1); err == nil && len(events) > 0 {
		e := events[0]
		msg = fmt.Sprintf("%s is no longer active: %s %s -> %s by %s (generation %d)", target, e.Action, e.From, e.To, e.Trigger, e.Generation)
		if e.Reason != "" {
			msg += ": " + oneLine(e.Reason)
		}
	}
	fmt.Fprintf(c.stderr, "bluegreen: watch: %s\n", msg)
	return clientExitSwitchedOff
}
