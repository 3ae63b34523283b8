package state

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A crash between the temporary file's creation and the rename leaves
// ".state.json.tmp-*" behind; the next start removes those of its own
// state file and nothing else.
func TestRemoveStaleTemps(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.CompareAndSwap(ctx, 0, State{Active: "blue", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	// What a crashed write leaves: files made the way replace makes them.
	var stale []string
	for range 2 {
		f, err := os.CreateTemp(s.dir, ".state.json.tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(`{"active":"gre`)
		f.Close()
		stale = append(stale, f.Name())
	}
	keep := []string{
		filepath.Join(s.dir, ".other.json.tmp-1"), // another store's
		filepath.Join(s.dir, "state.json.tmp-2"),  // not hidden: not ours
		filepath.Join(s.dir, ".state.json.bak"),
	}
	for _, k := range keep {
		if err := os.WriteFile(k, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(s.dir, ".state.json.tmp-dir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}

	removed, err := s.RemoveStaleTemps()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	slices.Sort(stale)
	if !slices.Equal(removed, stale) {
		t.Fatalf("removed %q, want %q", removed, stale)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	for _, p := range append(keep, dir, s.path) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s should be kept: %v", p, err)
		}
	}
	if st, err := s.Load(ctx); err != nil || st.Active != "blue" {
		t.Fatalf("state after cleanup: %+v, %v", st, err)
	}
	// Nothing left: a second call removes nothing.
	if removed, err := s.RemoveStaleTemps(); err != nil || len(removed) != 0 {
		t.Fatalf("second call: %q, %v", removed, err)
	}
}

// A state file whose name holds glob characters only matches itself.
func TestRemoveStaleTempsGlobName(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFileStore(filepath.Join(dir, "st[a]te*.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mine := filepath.Join(dir, ".st[a]te*.json.tmp-1")
	other := filepath.Join(dir, ".state-x.json.tmp-1")
	for _, p := range []string{mine, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.RemoveStaleTemps()
	if err != nil || !slices.Equal(removed, []string{mine}) {
		t.Fatalf("removed %q, %v; want only %s", removed, err, mine)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("%s removed: %v", other, err)
	}
}
