package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// parseSteps reads "1,5,25,50,100".
func parseSteps(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(f), "%")))
		if err != nil {
			return nil, fmt.Errorf("--steps: %q is not a whole percentage", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// rollout runs "bluegreen rollout [promote|pause|resume|abort|status]".
func (c *clientCmd) rollout(ctx context.Context, args []string) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, rest := args[0], args[1:]
		switch sub {
		case "status":
			return c.rolloutStatus(ctx, rest)
		case "promote", "pause", "resume", "abort":
			return c.rolloutAction(ctx, sub, rest)
		}
		// "rollout green" means a colour; "rollout start" a verb.
		example := "bluegreen rollout --to " + sub
		if sub == "start" || sub == "begin" || sub == "run" || sub == "create" || sub == "new" {
			example = "bluegreen rollout, or bluegreen rollout --to green --steps 10,50,100"
		}
		return c.errorf(clientExitUsage, "unknown rollout command %q: expected promote, pause, resume, abort or status; a rollout starts from flags alone: %s", sub, example)
	}
	return c.rolloutStart(ctx, args)
}

func (c *clientCmd) rolloutStart(ctx context.Context, args []string) int {
	fs := c.flagSet()
	to := fs.String("to", "", "target `colour` (default: the colour that is not active)")
	steps := fs.String("steps", "", "comma-separated `percentages`, the last one 100 (default 1,5,25,50,100)")
	interval := fs.Duration("interval", 0, "how long each step holds (default 1m)")
	minReq := fs.Int64("min-requests", 0, "requests the target must serve in a step before it can pass (default 100)")
	maxErr := fs.Float64("max-error-ratio", 0, "abort above this ratio of instance-caused errors on the target (default 0.01)")
	maxP99 := fs.Duration("max-p99", 0, "abort when the target's p99 latency exceeds this (default: no limit)")
	maxRatio := fs.Float64("max-p99-ratio", 0, "abort when the target's p99 exceeds this multiple of the active colour's (default: no limit)")
	maxHeld := fs.Int("max-held", 0, "pause after this many intervals held for want of traffic (default 3)")
	reason := fs.String("reason", "", "reason recorded with the rollout and its final cutover")
	watch := fs.Bool("watch", false, "follow the rollout until it completes (exit 0) or is aborted or ended by another switch (exit 4)")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{
		synopsis: "bluegreen rollout [--to C] [--steps 1,5,25,50,100] [--interval D] [--max-error-ratio R] [--max-p99 D] [--watch]\n       bluegreen rollout promote [--full] | pause | resume | abort [--reason R] | status",
		about: `Starts a progressive rollout: a growing share of the clients goes to the
target colour, step by step; the proxy's own counters decide whether a step
passes and abort it on too many errors or too slow answers. The last step
(100) is a cutover. The admin API refuses (exit 1) when a rollout already
runs or the target has no healthy instance. With --watch the exit status is
0 when the rollout completes and 4 when it is aborted or ended by another
switch.`,
		token: true,
	}, args, clientExitUsage); done {
		return code
	}
	stepList, err := parseSteps(*steps)
	if err != nil {
		return c.errorf(clientExitUsage, "%v", err)
	}
	ac, code := c.connect(true)
	if ac == nil {
		return code
	}
	defer ac.Close()
	info := c.progress(*asJSON)
	target := *to
	if target == "" {
		st, _, err := ac.Status(ctx)
		if err != nil {
			return c.fail(err, false)
		}
		for _, name := range colorNames(st) {
			if name != st.Active {
				target = name
			}
		}
	}
	req := admin.RolloutRequest{
		To: target, Steps: stepList, MinRequests: *minReq, MaxErrorRatio: *maxErr,
		MaxP99Ratio: *maxRatio, MaxHeld: *maxHeld, Reason: *reason, Trigger: state.TriggerCLI,
	}
	if *interval > 0 {
		req.StepInterval = interval.String()
	}
	if *maxP99 > 0 {
		req.MaxP99 = maxP99.String()
	}
	v, raw, err := ac.StartRollout(ctx, req)
	if err != nil {
		return c.fail(err, *asJSON)
	}
	if *asJSON {
		c.printJSON(raw)
	}
	writeRollout(info, v)
	if !*watch {
		return clientExitOK
	}
	return c.rolloutWatch(ctx, ac, info, v)
}

// rolloutWatch polls until the rollout started as v ends.
func (c *clientCmd) rolloutWatch(ctx context.Context, ac *adminclient.Client, info io.Writer, v rollout.RolloutView) int {
	var started time.Time
	if r := v.Rollout; r != nil {
		started = r.StartedAt
	} else if l := v.Last; l != nil {
		started = l.StartedAt
	}
	last := rolloutLine(v)
	tick := time.NewTicker(max(c.o.watchEvery/4, time.Millisecond))
	defer tick.Stop()
	for {
		if v.Rollout == nil || !v.Rollout.StartedAt.Equal(started) {
			l := v.Last
			if l == nil || !l.StartedAt.Equal(started) {
				return c.errorf(clientExitSwitchedOff, "the rollout ended and another one replaced it")
			}
			switch l.Outcome {
			case state.OutcomeCompleted:
				fmt.Fprintf(info, "rollout: completed: %s is active (%s)\n", l.To, l.Ending)
				return clientExitOK
			case state.OutcomeAborted:
				return c.errorf(clientExitSwitchedOff, "aborted at %d%%: %s", l.Weight, l.Ending)
			default:
				return c.errorf(clientExitSwitchedOff, "ended at %d%%: %s", l.Weight, l.Ending)
			}
		}
		select {
		case <-ctx.Done():
			return c.errorf(clientExitFailed, "watch interrupted; the rollout goes on (bluegreen rollout status)")
		case <-tick.C:
		}
		var err error
		if v, _, err = ac.Rollout(ctx); err != nil {
			return c.fail(err, false)
		}
		if line := rolloutLine(v); line != last && v.Rollout != nil {
			fmt.Fprintf(info, "rollout: %s\n", line)
			last = line
		}
	}
}

func (c *clientCmd) rolloutAction(ctx context.Context, sub string, args []string) int {
	c.name = "rollout " + sub
	fs := c.flagSet()
	full := false
	if sub == "promote" {
		fs.BoolVar(&full, "full", false, "go to 100% (the cutover) at once")
	}
	reason := fs.String("reason", "", "reason recorded with the change")
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	about := map[string]string{
		"promote": "Moves the rollout to its next step now, whatever the analysis says; --full goes\nstraight to 100% (the cutover). A paused rollout resumes.",
		"pause":   "Holds the rollout at its current weight; the analysis still aborts on a breach.",
		"resume":  "Lets a paused rollout advance again; the step's window starts afresh.",
		"abort":   "Sends every client back to the active colour at once and ends the rollout.",
	}[sub]
	if code, done := c.parse(fs, clientHelp{synopsis: "bluegreen rollout " + sub + " [--reason R] [--json]", about: about, token: true}, args, clientExitUsage); done {
		return code
	}
	ac, code := c.connect(true)
	if ac == nil {
		return code
	}
	defer ac.Close()
	v, raw, err := ac.RolloutAction(ctx, sub, admin.RolloutActionRequest{Full: full, Reason: *reason, Trigger: state.TriggerCLI})
	if err != nil {
		return c.fail(err, *asJSON)
	}
	if *asJSON {
		return c.printJSON(raw)
	}
	writeRollout(c.stdout, v)
	return clientExitOK
}

func (c *clientCmd) rolloutStatus(ctx context.Context, args []string) int {
	c.name = "rollout status"
	fs := c.flagSet()
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	if code, done := c.parse(fs, clientHelp{synopsis: "bluegreen rollout status [--json]", about: "Shows the rollout in progress, or how the last one ended."}, args, clientExitUsage); done {
		return code
	}
	ac, code := c.connect(false)
	if ac == nil {
		return code
	}
	defer ac.Close()
	v, raw, err := ac.Rollout(ctx)
	if err != nil {
		return c.fail(err, *asJSON)
	}
	if *asJSON {
		return c.printJSON(raw)
	}
	writeRollout(c.stdout, v)
	return clientExitOK
}

// rolloutLine is a one-line summary of a running rollout.
func rolloutLine(v rollout.RolloutView) string {
	r := v.Rollout
	if r == nil {
		return v.Phase
	}
	return fmt.Sprintf("%s -> %s step %d/%d (%d%%) %s: %s", r.From, r.To, v.StepNumber, len(r.Steps), r.Weight, v.Phase, v.Verdict)
}

// writeRollout prints a rollout view for people.
func writeRollout(w io.Writer, v rollout.RolloutView) {
	r := v.Rollout
	if r == nil {
		l := v.Last
		if l == nil {
			fmt.Fprintf(w, "rollout: none (active %s, generation %d)\n", v.Active, v.Generation)
			return
		}
		fmt.Fprintf(w, "rollout: none running; the last one (%s -> %s) %s at %d%%: %s\n", l.From, l.To, l.Outcome, l.Weight, l.Ending)
		fmt.Fprintf(w, "active: %s (generation %d)\n", v.Active, v.Generation)
		return
	}
	fmt.Fprintf(w, "rollout: %s -> %s, step %d of %d (%d%%), %s, %s in step (interval %s)\n",
		r.From, r.To, v.StepNumber, len(r.Steps), r.Weight, v.Phase, v.TimeInStep, time.Duration(r.StepInterval))
	names := make([]string, 0, len(v.Colors))
	for name := range v.Colors {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cw := v.Colors[name]
		fmt.Fprintf(w, "  %-6s %d requests, %d instance errors (%.2f%%), p99 %s\n", name, cw.Requests, cw.InstanceErrors, cw.ErrorRatio*100, cw.P99)
	}
	if v.Replicas > 0 {
		fmt.Fprintf(w, "counts: fleet totals of %d replicas\n", v.Replicas)
	}
	fmt.Fprintf(w, "verdict: %s\n", v.Verdict)
}
