package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Builds builds main packages of this module, each once per test binary,
// into one temporary directory. The zero value is ready; call Cleanup from
// TestMain after m.Run. Safe for concurrent use.
type Builds struct {
	mu   sync.Mutex
	dir  string
	done map[string]buildResult
}

type buildResult struct {
	path string
	err  error
}

// Path returns the built binary of the package pkg (an import path or a
// directory), building it on first use. It skips the test under -short and
// fails it when the build fails.
func (b *Builds) Path(t testing.TB, pkg string) string {
	t.Helper()
	SkipIfShort(t, "build binaries")
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.done[pkg]
	if !ok {
		r = b.build(pkg)
		if b.done == nil {
			b.done = map[string]buildResult{}
		}
		b.done[pkg] = r
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

func (b *Builds) build(pkg string) buildResult {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return buildResult{err: fmt.Errorf("the go command is needed to build %s: %w", pkg, err)}
	}
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "bluegreen-testkit-"); err != nil {
			return buildResult{err: err}
		}
	}
	name := path.Base(filepath.ToSlash(pkg))
	if name == "." || name == "/" {
		name = "main"
	}
	out := filepath.Join(b.dir, fmt.Sprintf("%d-%s", len(b.done), name))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if output, err := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return buildResult{err: fmt.Errorf("go build %s: %v\n%s", pkg, err, output)}
	}
	return buildResult{path: out}
}

// Cleanup removes the built binaries.
func (b *Builds) Cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
