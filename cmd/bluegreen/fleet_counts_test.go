//go:build !noetcd

package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync/atomic"
	"testing"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
)

// switchableApp answers as color; once failing is set, every 20th request
// (5 %) other than /health fails with a 500.
func switchableApp(t *testing.T, color string, failing *atomic.Bool) *httptest.Server {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(app.ColorHeader, color)
		if r.URL.Path != "/health" && failing != nil && failing.Load() && n.Add(1)%20 == 1 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, color)
	}))
	t.Cleanup(s.Close)
	return s
}

// Two replicas on a real etcd, the traffic only through the follower: the
// leader's view shows the fleet's counts from both replicas, and when green
// starts failing 5 % of the follower's requests the leader aborts on them.
func TestFleetRolloutLeaderJudgesFollowerTraffic(t *testing.T) {
	var failing atomic.Bool
	blue, green := switchableApp(t, "blue", nil), switchableApp(t, "green", &failing)
	reps, leader, follower := rolloutFleet(t, blue.URL, green.URL)
	if code, m := reps[leader].post("/admin/rollout", `{"to":"green","steps":[50,100],"step_interval":"1h","min_requests":200}`); code != 200 {
		t.Fatalf("start: %d %v", code, m)
	}
	waitUntil(t, "both replicas at 50%", func() bool {
		return reps[0].rolloutView().Weight == 50 && reps[1].rolloutView().Weight == 50
	})
	var onGreen []string
	for i := 0; len(onGreen) < 50; i++ {
		id := fmt.Sprintf("client-%03d", i)
		if colourFor(t, reps[follower], id, "/") == "green" {
			onGreen = append(onGreen, id)
		}
	}
	// Healthy green: the leader sees the follower's traffic as its own.
	for i := range 300 {
		colourFor(t, reps[follower], onGreen[i%len(onGreen)], "/")
	}
	waitUntil(t, "the leader's view of the follower's counts", func() bool {
		v := reps[leader].rolloutView()
		return v.Replicas == 2 && v.Colors["green"].Requests >= 300 && v.FleetStale == ""
	})
	v := reps[leader].rolloutView()
	t.Logf("leader's view: %d replicas, green %+v, verdict %q", v.Replicas, v.Colors["green"], v.Verdict)
	if v.Phase != "running" || v.Colors["green"].InstanceErrors != 0 {
		t.Fatalf("leader: %+v", v)
	}
	// Green fails 5 % of the follower's requests: the leader aborts.
	failing.Store(true)
	for i := 0; reps[leader].rolloutView().Phase == "running"; i++ {
		if i > 20_000 {
			t.Fatal("the leader never aborted")
		}
		colourFor(t, reps[follower], onGreen[i%len(onGreen)], "/")
	}
	v = reps[leader].rolloutView()
	if v.Phase != "aborted" || !regexp.MustCompile(`^green 5xx \d+\.\d% > 1% over \d+ requests$`).MatchString(v.Last.Ending) {
		t.Fatalf("leader: %+v %+v", v, v.Last)
	}
	t.Logf("the leader aborted on the follower's counts: %s", v.Last.Ending)
	waitUntil(t, "the follower to apply the abort", func() bool { return reps[follower].rolloutView().Phase == "aborted" })
}
