package configs

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
)

// abortRollout starts a progressive rollout to green on p and sends
// requests that green answers with 503 (the demo app's /status/503) until
// the rollout's own analysis aborts it.
func abortRollout(t *testing.T, p proxy) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := p.api.StartRollout(ctx, admin.RolloutRequest{
		To: "green", Steps: []int{50, 100}, StepInterval: "1h", MinRequests: 5, MaxErrorRatio: 0.01,
		Reason: "monitoring test",
	}); err != nil {
		t.Fatalf("start rollout: %v", err)
	}
	waitFor(t, 30*time.Second, "the rollout to abort", func() (bool, error) {
		for range 10 {
			// No cookie: every request is a new client, half of them on green.
			if _, _, _, err := httpDo(http.MethodGet, p.public+"/status/503", ""); err != nil {
				return false, err
			}
		}
		v, _, err := p.api.Rollout(ctx)
		return err == nil && v.Phase == "aborted", err
	})
	v, _, _ := p.api.Rollout(ctx)
	t.Logf("rollout aborted: %s", v.Last.Ending)
}
