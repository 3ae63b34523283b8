package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// Tool returns the path of the program name. Where it is missing the test
// is skipped on a developer's machine and fails in CI (CI set), which
// installs it: where says from what (".ci/apt/ops.txt").
func Tool(t testing.TB, name, where string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (CI installs it from %s)", name, where)
	}
	t.Skipf("%s is not installed", name)
	return ""
}
