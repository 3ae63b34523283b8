package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
	"github.com/cryoprotect/bluegreen/state"
)

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
	defer ac.Close()
	st, _, err := ac.Status(ctx)
	if err != nil {
		return c.fail(err, false)
	}
	// Name the target, so a retried request cannot roll back twice.
	res, raw, err := ac.Rollback(ctx, admin.SwitchRequest{
		To: st.Previous, Force: *force, Reason: *reason, Trigger: state.TriggerCLI,
	})
	if err != nil {
		var ae *adminclient.APIError
		if errors.As(err, &ae) && ae.Body.Code == "no_previous" {
			if *asJSON {
				c.printJSON(ae.Raw)
			}
			fmt.Fprintf(c.stderr, "bluegreen: rollback refused: %v: %s has been the only active colour so far (HTTP %d)\n", ae, st.Active, ae.Status)
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
