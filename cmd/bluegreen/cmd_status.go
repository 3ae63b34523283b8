package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
)

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
	defer ac.Close()
	st, raw, err := ac.Status(ctx)
	if err != nil {
		return c.fail(err, false)
	}
	if *asJSON {
		return c.printJSON(raw)
	}
	writeStatus(c.stdout, st, c.o.now())
	return clientExitOK
}
