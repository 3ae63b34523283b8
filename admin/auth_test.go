package admin

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state"
)

// TestEveryMutatingRouteNeedsToken walks the router, so a mutating route
// added later is covered too: without a token or with a wrong one it answers
// 401, the controller is never called, the state is unchanged, and the
// refusal is logged without the token that was sent.
func TestEveryMutatingRouteNeedsToken(t *testing.T) {
	const token = "the-right-token-4711"
	logs := &testkit.Buffer{}
	fc := &fakeController{st: state.State{Active: "blue", Generation: 1}}
	h := New(Config{
		Token: token, Controller: fc, Health: fakeHealth{}, Colors: [2]string{"blue", "green"},
		Applied: func() (string, uint64) { return "blue", 1 },
		Ready:   func() (bool, string) { return true, "" },
		Log:     slog.New(slog.NewJSONHandler(logs, nil)),
		Pprof:   true, // so POST /debug/pprof/symbol is walked too
	})
	var mutating []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			mutating = append(mutating, method+" "+route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(mutating) < 2 {
		t.Fatalf("found only %v", mutating)
	}
	wrong := []string{"", "Bearer", "Bearer wrong-token-0815", "Basic dGhlLXJpZ2h0LXRva2VuLTQ3MTE6", token, "Bearer " + token + "x", "bearer " + token}
	for _, mr := range mutating {
		method, route, _ := strings.Cut(mr, " ")
		for _, auth := range wrong {
			req := httptest.NewRequest(method, route, strings.NewReader(`{"to":"green","force":true}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s with %q: %d, want 401", mr, auth, rec.Code)
			}
		}
	}
	if len(fc.reqs) != 0 || fc.State().Generation != 1 {
		t.Fatalf("a refused call changed something: %d requests, generation %d", len(fc.reqs), fc.State().Generation)
	}
	out := logs.String()
	if n := strings.Count(out, "admin request refused"); n != len(mutating)*len(wrong) {
		t.Errorf("%d refusals logged, want %d", n, len(mutating)*len(wrong))
	}
	for _, secret := range []string{token, "wrong-token-0815", "dGhlLXJpZ2h0LXRva2VuLTQ3MTE6"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log contains a sent token %q", secret)
		}
	}
	t.Logf("%d mutating routes %v x %d bad credentials: all 401, nothing changed", len(mutating), mutating, len(wrong))
}
