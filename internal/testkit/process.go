package testkit

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a child process whose output (stdout and stderr) goes to Out.
// It is stopped when the test ends: SIGTERM, then SIGKILL after 10 s; the
// end of its output is logged when the test failed.
type Process struct {
	Name   string
	Cmd    *exec.Cmd
	Out    *Buffer
	exited chan struct{}
	err    error // of Wait; read after exited is closed
}

// Start runs bin with args and the test process's environment plus env.
// The kernel kills the child if the test binary dies first (Linux).
func Start(t testing.TB, name, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Cmd: exec.Command(bin, args...), Out: &Buffer{}, exited: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	setPdeathsig(p.Cmd)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			out := p.Out.String()
			if len(out) > 4000 {
				out = out[len(out)-4000:]
			}
			t.Logf("--- end of %s output ---\n%s", name, out)
		}
	})
	return p
}

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Signal sends sig to the process (nothing once it has ended).
func (p *Process) Signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Signal(sig)
	}
}

// Kill kills the process and waits until it has ended.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM, waits up to grace, then kills the process.
func (p *Process) Stop(grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// ExitCode waits up to within for the process to end and returns its exit
// status; it fails the test when the process is still running.
func (p *Process) ExitCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s still running after %s; output:\n%s", p.Name, within, p.Out.String())
		return -1
	}
}

// WaitLog waits up to within for a JSON log line whose "msg" is msg and
// returns its fields. It fails the test when the process ends first or the
// time runs out.
func (p *Process) WaitLog(t testing.TB, within time.Duration, msg string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	var fields map[string]any
	_, err := p.Out.Wait(ctx, func(s string) bool {
		fields = findLog(s, msg)
		return fields != nil
	})
	if err != nil {
		state := "still running"
		select {
		case <-p.exited:
			state = "exited: " + p.Cmd.ProcessState.String()
		default:
		}
		t.Fatalf("%s wrote no %q log line within %s (%s); output:\n%s", p.Name, msg, within, state, p.Out.String())
	}
	return fields
}

// findLog returns the fields of the first JSON line of s whose "msg" is msg.
func findLog(s, msg string) map[string]any {
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// Addr is WaitLog's field key as a string ("" when absent).
func Addr(fields map[string]any, key string) string {
	s, _ := fields[key].(string)
	return s
}
