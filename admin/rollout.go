package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// Rollouts is the progressive-rollout part of the control plane;
// *rollout.Controller implements it.
type Rollouts interface {
	StartRollout(ctx context.Context, req rollout.RolloutRequest) (rollout.RolloutView, error)
	Promote(ctx context.Context, a rollout.RolloutAction) (rollout.RolloutView, error)
	Pause(ctx context.Context, a rollout.RolloutAction) (rollout.RolloutView, error)
	Resume(ctx context.Context, a rollout.RolloutAction) (rollout.RolloutView, error)
	Abort(ctx context.Context, a rollout.RolloutAction) (rollout.RolloutView, error)
	RolloutStatus() rollout.RolloutView
}

// RolloutRequest is the body of POST /admin/rollout. Durations are Go
// duration strings ("1m", "500ms").
type RolloutRequest struct {
	To            string  `json:"to"`
	Steps         []int   `json:"steps"`
	StepInterval  string  `json:"step_interval"`
	MinRequests   int64   `json:"min_requests"`
	MaxErrorRatio float64 `json:"max_error_ratio"`
	MaxP99        string  `json:"max_p99"`
	MaxP99Ratio   float64 `json:"max_p99_ratio"`
	MaxHeld       int     `json:"max_held"`
	Reason        string  `json:"reason"`
	Trigger       string  `json:"trigger"`
}

// RolloutActionRequest is the optional body of promote, pause, resume and
// abort.
type RolloutActionRequest struct {
	Full    bool   `json:"full"`
	Reason  string `json:"reason"`
	Trigger string `json:"trigger"`
}

// mountRollout adds the rollout endpoints under /admin; r is the /admin
// router, guard the token middleware of the mutating calls.
func (a *api) mountRollout(r chi.Router) {
	ro := a.cfg.Rollouts
	r.Get("/rollout", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ro.RolloutStatus())
	})
	r.Group(func(r chi.Router) {
		r.Use(a.mutation)
		r.Post("/rollout", a.startRollout)
		for name, f := range map[string]func(context.Context, rollout.RolloutAction) (rollout.RolloutView, error){
			"promote": ro.Promote, "pause": ro.Pause, "resume": ro.Resume, "abort": ro.Abort,
		} {
			r.Post("/rollout/"+name, a.rolloutAction(f))
		}
	})
}

// readBody reads a bounded body, answering the error itself.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body larger than %d bytes", MaxBodyBytes))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

// decodeStrict decodes one JSON object with no unknown fields; an empty
// body leaves v as it is. Anything but an object (a form, as curl -d
// to=green sends; null) is refused with an example, not with the
// decoder's reading of it as a broken literal.
func decodeStrict(body []byte, v any, what string) error {
	trimmed := strings.TrimSpace(string(body))
	if len(trimmed) == 0 {
		return nil
	}
	if trimmed[0] != '{' {
		if len(trimmed) > 40 {
			trimmed = trimmed[:40] + "…"
		}
		return fmt.Errorf("body is not a valid %s: want a JSON object such as {\"to\":\"green\"}, got %q", what, trimmed)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not a valid %s: %v", what, err)
	}
	if dec.More() {
		return errors.New("body has data after the JSON object")
	}
	return nil
}

func parseDur(name, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s must be a duration such as \"1m\" or \"500ms\", got %q", name, v)
	}
	return d, nil
}

func checkText(reason, trigger string) error {
	if len(reason) > maxReason {
		return fmt.Errorf("reason longer than %d bytes", maxReason)
	}
	switch trigger {
	case "", state.TriggerAPI, state.TriggerCLI:
		return nil
	}
	return fmt.Errorf("trigger must be %q or %q", state.TriggerAPI, state.TriggerCLI)
}

func (a *api) startRollout(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req RolloutRequest
	err := decodeStrict(body, &req, "rollout request")
	if err == nil && req.To == "" {
		err = errors.New(`"to" is required`)
	}
	if err == nil {
		err = checkText(req.Reason, req.Trigger)
	}
	rr := rollout.RolloutRequest{To: req.To, Steps: req.Steps, MinRequests: req.MinRequests, MaxErrorRatio: req.MaxErrorRatio,
		MaxP99Ratio: req.MaxP99Ratio, MaxHeld: req.MaxHeld, Reason: req.Reason, Trigger: req.Trigger}
	if err == nil {
		rr.StepInterval, err = parseDur("step_interval", req.StepInterval)
	}
	if err == nil {
		rr.MaxP99, err = parseDur("max_p99", req.MaxP99)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	v, err := a.cfg.Rollouts.StartRollout(r.Context(), rr)
	if err != nil {
		status, code := errorStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *api) rolloutAction(f func(context.Context, rollout.RolloutAction) (rollout.RolloutView, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		var req RolloutActionRequest
		err := decodeStrict(body, &req, "rollout action")
		if err == nil {
			err = checkText(req.Reason, req.Trigger)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		v, err := f(r.Context(), rollout.RolloutAction{Full: req.Full, Reason: req.Reason, Trigger: req.Trigger})
		if err != nil {
			status, code := errorStatus(err)
			writeError(w, status, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}
