package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/rollout"
)

// Rollout calls GET /admin/rollout: the rollout in progress or the last one.
func (c *Client) Rollout(ctx context.Context) (rollout.RolloutView, []byte, error) {
	return c.rolloutCall(ctx, http.MethodGet, "admin/rollout", nil)
}

// StartRollout calls POST /admin/rollout.
func (c *Client) StartRollout(ctx context.Context, req admin.RolloutRequest) (rollout.RolloutView, []byte, error) {
	return c.rolloutCall(ctx, http.MethodPost, "admin/rollout", req)
}

// RolloutAction calls POST /admin/rollout/<action>: promote, pause, resume
// or abort.
func (c *Client) RolloutAction(ctx context.Context, action string, req admin.RolloutActionRequest) (rollout.RolloutView, []byte, error) {
	return c.rolloutCall(ctx, http.MethodPost, "admin/rollout/"+action, req)
}

func (c *Client) rolloutCall(ctx context.Context, method, path string, body any) (rollout.RolloutView, []byte, error) {
	var v rollout.RolloutView
	data, err := c.Do(ctx, method, path, nil, body)
	if err != nil {
		return v, nil, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, nil, fmt.Errorf("the %s answer is not valid: %w", path, err)
	}
	return v, data, nil
}
