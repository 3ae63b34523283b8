package main

import (
	"cmp"
	"context"
	"fmt"
	"text/tabwriter"
)

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
	defer ac.Close()
	events, raw, err := ac.History(ctx, *limit)
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
