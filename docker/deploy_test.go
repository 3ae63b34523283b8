// Package docker holds the Docker files of bluegreen; its only Go code is
// this test of deploy.sh.
package docker

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// needTools skips on a developer machine without the tools deploy.sh uses
// and fails in CI.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		testkit.Tool(t, tool, ".ci/apt/deploy.txt")
	}
}

// deployRun is one run of deploy.sh against the fakes in testdata: a fake
// docker-compose whose proxy starts on blue and whose "bluegreen rollout"
// ends as scenario says (complete, abort, refuse, hang), a fake docker and
// a fake curl answering as the idle colour.
type deployRun struct {
	code   int
	out    string
	active string // the fake proxy's active colour afterwards
	env    string // the tags deploy.sh recorded
	ups    int    // docker-compose up calls
	calls  string
}

func runDeploy(t *testing.T, scenario, phase string, args ...string) deployRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"docker", "curl", "compose"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fake-"+name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string]string{"active": "blue", "idle": "green", "phase": phase, "calls": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", append([]string{"deploy.sh"}, args...)...)
	cmd.Env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FAKE_DIR="+dir, "FAKE_ROLLOUT="+scenario, "COMPOSE="+filepath.Join(bin, "compose"),
		"ENV_FILE="+filepath.Join(dir, "env"), "SMOKE_REQUESTS=2", "WATCH=2s",
		"COMPOSE_FILE=", "COMPOSE_PROJECT_NAME=", "CANARY=", "CANARY_STEPS=", "CANARY_INTERVAL=", "CANARY_TIMEOUT=",
		"CANARY_MAX_ERROR_RATIO=", "CANARY_MAX_P99=", "CANARY_MIN_REQUESTS=", "REASON=", "KEEP_FAILED=", "STOP_FAILED=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := deployRun{out: out.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	r.active, r.env, r.calls = read("active"), strings.Join(strings.Fields(read("env")), " "), read("calls")
	r.ups = strings.Count(r.calls, " up -d ")
	return r
}

// TestDeployCanary runs deploy.sh --canary through each outcome of the
// rollout without Docker: completed (exit 0, tags recorded), aborted (exit
// 4 with the evidence and what to do), refused (exit 1, the idle colour
// put back), still paused when the wait ends (exit 5, nothing undone), and
// a rollout already running (exit 1 before anything moves); the argument
// checks that refuse with exit 2 before anything runs; and shellcheck.
func TestDeployCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs deploy.sh several times (about 10 s)")
	}
	needTools(t, "bash", "jq", "timeout")
	start := time.Now()

	t.Run("shellcheck", func(t *testing.T) {
		needTools(t, "shellcheck")
		if out, err := exec.Command("shellcheck", "deploy.sh").CombinedOutput(); err != nil {
			t.Fatalf("shellcheck deploy.sh: %v\n%s", err, out)
		}
	})

	t.Run("completed", func(t *testing.T) {
		r := runDeploy(t, "complete", "none", "--canary", "--steps", "5,25,100", "--interval", "1s", "--max-p99", "500ms", "v2")
		if r.code != 0 || r.active != "green" || r.env != "BLUE_TAG=v1 GREEN_TAG=v2" {
			t.Fatalf("exit %d, active %s, env %q:\n%s", r.code, r.active, r.env, r.out)
		}
		if !strings.Contains(r.calls, "exec -T bluegreen /bluegreen rollout --to green --steps 5,25,100 --interval 1s --max-p99 500ms --reason deploy v2 --watch") {
			t.Errorf("the rollout ran as:\n%s", r.calls)
		}
		if strings.Contains(r.calls, "cutover") {
			t.Errorf("a cutover ran besides the rollout:\n%s", r.calls)
		}
	})
	t.Run("aborted", func(t *testing.T) {
		r := runDeploy(t, "abort", "none", "--canary", "v2")
		if r.code != 4 || r.active != "blue" {
			t.Fatalf("exit %d, active %s:\n%s", r.code, r.active, r.out)
		}
		for _, want := range []string{"green 5xx 4.2% > 1% over 812 requests", "every client is back on blue", "(fake history)",
			"stop app-green", "GREEN_TAG=v1 ", "up -d --no-deps app-green"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q:\n%s", want, r.out)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		r := runDeploy(t, "refuse", "none", "--canary", "v2")
		if r.code != 1 || r.ups != 2 || r.env != "BLUE_TAG=v1 GREEN_TAG=v1" {
			t.Fatalf("exit %d, %d up calls, env %q:\n%s", r.code, r.ups, r.env, r.out)
		}
	})
	t.Run("still paused", func(t *testing.T) {
		r := runDeploy(t, "hang", "none", "--canary", "--timeout", "2s", "v2")
		if r.code != 5 || r.active != "blue" || !strings.Contains(r.out, "STILL RUNNING") || !strings.Contains(r.out, "rollout promote|resume|abort") {
			t.Fatalf("exit %d, active %s:\n%s", r.code, r.active, r.out)
		}
		if strings.Contains(r.calls, "cutover") {
			t.Errorf("something was undone:\n%s", r.calls)
		}
	})
	t.Run("already running", func(t *testing.T) {
		r := runDeploy(t, "complete", "running", "--canary", "v2")
		if r.code != 1 || r.ups != 0 || !strings.Contains(r.out, "a rollout is already running") {
			t.Fatalf("exit %d, %d up calls:\n%s", r.code, r.ups, r.out)
		}
	})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--steps", "5,100", "v2"}, "--steps only apply with --canary"},
		{[]string{"--canary", "--steps", "5,50", "v2"}, "must end with 100"},
		{[]string{"--canary", "--steps", "50,25,100", "v2"}, "must rise strictly"},
		{[]string{"--canary", "--interval", "2x", "v2"}, "bad duration 2x"},
		{[]string{"--canary", "--interval", "--dry-run", "v2"}, "--interval needs a value"},
		{[]string{"--canary", "--max-error-ratio", "2", "v2"}, "--max-error-ratio must be a ratio"},
		{[]string{"--canary", "--max-p99", "fast", "v2"}, "--max-p99 must be a duration"},
		{[]string{"--canary", "--min-requests", "0", "v2"}, "--min-requests must be a positive"},
		{[]string{"--canary", "v2", "v3"}, "one VERSION only"},
		{[]string{"--bogus", "v2"}, "unknown option --bogus"},
	} {
		r := runDeploy(t, "complete", "none", c.args...)
		if r.code != 2 || !strings.Contains(r.out, c.want) || r.calls != "" {
			t.Errorf("deploy.sh %s: exit %d, calls %q, output lacks %q:\n%s", strings.Join(c.args, " "), r.code, r.calls, c.want, r.out)
		}
	}
	r := runDeploy(t, "complete", "none", "--canary", "--steps=10,100", "--interval=30s", "--dry-run", "--", "v2")
	if r.code != 0 || r.calls != "" || !strings.Contains(r.out, "bluegreen rollout --to <idle> --steps 10\\,100 --interval 30s") {
		t.Errorf("dry run: exit %d, calls %q:\n%s", r.code, r.calls, r.out)
	}
	t.Logf("deploy.sh runs took %v", time.Since(start).Round(100*time.Millisecond))
}
