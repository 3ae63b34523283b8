package admin

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

type nopRouter struct{}

func (nopRouter) SetActive(string, uint64) error { return nil }

// rolloutAPI serves the admin API over a real controller and file store;
// green's health is given.
func rolloutAPI(t *testing.T, token string, greenHealthy bool) *httptest.Server {
	t.Helper()
	store, err := state.NewFileStore(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	fh := fakeHealth{
		"blue":  {{URL: "http://b:1", Healthy: true, Checked: true}},
		"green": {{URL: "http://g:1", Healthy: greenHealthy, Checked: true}},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctl, err := rollout.New(rollout.Config{Colors: [2]string{"blue", "green"}, InitialColor: "blue"}, store, nopRouter{}, fh, nil, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{
		Token: token, Controller: ctl, Rollouts: ctl, Health: fh, Colors: [2]string{"blue", "green"},
		Applied: func() (string, uint64) { return "blue", 1 }, Ready: func() (bool, string) { return true, "" },
		Log: log,
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRolloutEndpoints(t *testing.T) {
	srv := rolloutAPI(t, "s3cret", true)
	auth := []string{"Authorization", "Bearer s3cret"}
	steps := []struct {
		method, path, body string
		hdr                []string
		code               int
		check              func(m map[string]any) bool
	}{
		{"GET", "/admin/rollout", "", nil, 200, func(m map[string]any) bool { return m["phase"] == "none" }},
		{"POST", "/admin/rollout", `{"to":"green"}`, nil, 401, nil},
		{"POST", "/admin/rollout", `{"to":"green","steps":[1,5]}`, auth, 400, func(m map[string]any) bool { return m["code"] == "bad_request" }},
		{"POST", "/admin/rollout", `{"to":"green","step_interval":"soon"}`, auth, 400, nil},
		{"POST", "/admin/rollout", `{"to":"green","colour":"x"}`, auth, 400, nil},
		{"POST", "/admin/rollout", `{}`, auth, 400, nil},
		{"POST", "/admin/rollout", `to=green`, auth, 400, func(m map[string]any) bool {
			return strings.Contains(m["error"].(string), "want a JSON object")
		}},
		{"POST", "/admin/rollout/promote", ``, auth, 409, func(m map[string]any) bool { return m["code"] == "no_rollout" }},
		{"POST", "/admin/rollout?to=green", `{"to":"green"}`, auth, 400, func(m map[string]any) bool {
			return m["code"] == "bad_request" && strings.Contains(m["error"].(string), `"to"`)
		}},
		{"POST", "/admin/rollout?to=green", `{"to":"green"}`, nil, 401, nil},
		{"POST", "/admin/rollout", `{"to":"green","steps":[100]}`, append([]string{"Origin", "http://evil.example"}, auth...), 403,
			func(m map[string]any) bool { return m["code"] == "cross_origin" }},
		{"POST", "/admin/rollout", `{"to":"green","steps":[10,50,100],"step_interval":"1m","max_p99":"500ms","reason":"release 1.4.3"}`, auth, 200,
			func(m map[string]any) bool {
				return m["phase"] == "running" && m["weight"] == 10.0 && m["step_number"] == 1.0
			}},
		{"POST", "/admin/rollout", `{"to":"green"}`, auth, 409, func(m map[string]any) bool { return m["code"] == "rollout_running" }},
		{"GET", "/admin/rollout", "", nil, 200, func(m map[string]any) bool {
			r := m["rollout"].(map[string]any)
			return r["step_interval"] == "1m0s" && r["max_p99"] == "500ms" && r["reason"] == "release 1.4.3" && m["verdict"] != ""
		}},
		{"POST", "/admin/rollout/pause", `{"reason":"lunch"}`, auth, 200, func(m map[string]any) bool { return m["phase"] == "paused" }},
		{"POST", "/admin/rollout/resume", ``, auth, 200, func(m map[string]any) bool { return m["phase"] == "running" }},
		{"POST", "/admin/rollout/promote", ``, auth, 200, func(m map[string]any) bool { return m["weight"] == 50.0 }},
		{"POST", "/admin/rollout/abort", `{"reason":"bad build","trigger":"slo-abort"}`, auth, 400, nil},
		{"POST", "/admin/rollout/abort", `{"reason":"bad build"}`, auth, 200, func(m map[string]any) bool {
			return m["phase"] == "aborted" && m["last"].(map[string]any)["ending"] == "bad build"
		}},
		{"POST", "/admin/rollout", `{"to":"green","steps":[100]}`, auth, 200, func(m map[string]any) bool { return m["phase"] == "completed" && m["active"] == "green" }},
	}
	for _, s := range steps {
		code, m, _ := call(t, s.method, srv.URL+s.path, s.body, s.hdr...)
		if code != s.code || (s.check != nil && !s.check(m)) {
			t.Fatalf("%s %s %s: %d %v, want %d", s.method, s.path, s.body, code, m, s.code)
		}
	}
}

func TestRolloutRefusedWhenTargetUnhealthy(t *testing.T) {
	srv := rolloutAPI(t, "", false)
	code, m, _ := call(t, "POST", srv.URL+"/admin/rollout", `{"to":"green"}`)
	if code != 409 || m["code"] != "unhealthy" {
		t.Fatalf("%d %v", code, m)
	}
}
