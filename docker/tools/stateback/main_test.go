package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSnapshotRetentionRestore(t *testing.T) {
	state, backups := t.TempDir(), t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(state, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := snapshot(state, backups, 2, time.Now()); err == nil {
		t.Fatal("a snapshot of an empty state directory succeeded")
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	write("bluegreen-state.json", `{"active":"green","generation":8}`)
	write("acme/cert.pem", "cert")
	first, err := snapshot(state, backups, 2, t0)
	if err != nil {
		t.Fatal(err)
	}
	write("bluegreen-state.json", `{"active":"blue","generation":9}`)
	for i := 1; i <= 2; i++ {
		if _, err := snapshot(state, backups, 2, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	names, err := list(backups)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "state-20261201T120000.000000000Z.tar.gz" {
		t.Fatalf("kept %v, want the 2 newest, newest first", names)
	}
	if _, err := restore(state, backups, first); err == nil {
		t.Fatal("restored a snapshot that retention removed")
	}
	// Lose the state, restore the newest.
	os.RemoveAll(state)
	os.Mkdir(state, 0o700)
	write("stray", "x")
	got, err := restore(state, backups, "")
	if err != nil {
		t.Fatal(err)
	}
	if got != names[0] {
		t.Fatalf("restored %s, want the newest %s", got, names[0])
	}
	b, err := os.ReadFile(filepath.Join(state, "bluegreen-state.json"))
	if err != nil || string(b) != `{"active":"blue","generation":9}` {
		t.Fatalf("state after restore: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(state, "acme/cert.pem")); err != nil || string(b) != "cert" {
		t.Fatalf("nested file after restore: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(state, "stray")); !os.IsNotExist(err) {
		t.Fatalf("a file that was not in the snapshot survived the restore: %v", err)
	}
	if _, err := restore(state, backups, "../etc/passwd"); err == nil {
		t.Fatal("restore accepted a path")
	}
}
