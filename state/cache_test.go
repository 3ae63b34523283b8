package state

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func st(active string, gen uint64) State {
	return State{Active: active, Generation: gen, ChangedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

func TestCacheSaveLoad(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(filepath.Join(dir, "cache.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Load(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty cache: %v, want ErrNotFound", err)
	}
	if err := c.Save(st("green", 3)); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(st("blue", 2)); err != nil { // older: ignored
		t.Fatal(err)
	}
	// A second Cache on the same file (a restarted process) reads it.
	c2, _ := OpenCache(c.Path())
	got, err := c2.Load()
	if err != nil || got.Active != "green" || got.Generation != 3 {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	if err := c2.Save(st("green", 3)); err != nil { // same generation: no write
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the cache (no temporary files)", len(ents))
	}
	fi, _ := os.Stat(c.Path())
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600", fi.Mode().Perm())
	}
	os.WriteFile(c.Path(), []byte(`{"format":1,"active":`), 0o600)
	if _, err := c2.Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("torn cache: %v, want an error naming it corrupt", err)
	}
	if _, err := OpenCache(filepath.Join(dir, "missing", "c.json")); err == nil {
		t.Fatal("OpenCache in a missing directory succeeded")
	}
}

// flaky is a FileStore that can be made unreachable.
type flaky struct {
	*FileStore
	down atomic.Bool
}

var errDown = errors.New("no quorum")

func (f *flaky) Load(ctx context.Context) (State, error) {
	if f.down.Load() {
		return State{}, errors.Join(ErrUnavailable, errDown)
	}
	return f.FileStore.Load(ctx)
}

func (f *flaky) CompareAndSwap(ctx context.Context, expect uint64, next State) error {
	if f.down.Load() {
		return errors.Join(ErrUnavailable, errDown)
	}
	return f.FileStore.CompareAndSwap(ctx, expect, next)
}

func newFlaky(t *testing.T) *flaky {
	fs, err := NewFileStore(filepath.Join(t.TempDir(), "shared.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &flaky{FileStore: fs}
}

func TestCachedStoreServesCopyWhileUnavailable(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	shared := newFlaky(t)
	cache, _ := OpenCache(filepath.Join(t.TempDir(), "cache.json"))
	s := NewCachedStore(shared, cache, nil, log)
	defer s.Close()

	// Unreachable and nothing cached: the error says both.
	shared.down.Store(true)
	if _, err := s.Load(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no cached state") {
		t.Fatalf("Load = %v, want ErrUnavailable and no cached state", err)
	}
	shared.down.Store(false)

	// A stored and a watched state both reach the cache.
	w := s.Watch(ctx)
	if err := s.CompareAndSwap(ctx, 0, st("blue", 1)); err != nil {
		t.Fatal(err)
	}
	if c, _ := cache.Load(); c.Generation != 1 {
		t.Fatalf("cache after CompareAndSwap: %+v", c)
	}
	if err := shared.FileStore.CompareAndSwap(ctx, 1, st("green", 2)); err != nil { // another writer
		t.Fatal(err)
	}
	if got := <-w; got.Generation < 1 {
		t.Fatalf("watched %+v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := cache.Load(); c.Generation == 2 && c.Active == "green" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watched state never cached")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Unreachable: Load serves the copy, a switch fails as unavailable.
	shared.down.Store(true)
	got, err := s.Load(ctx)
	if err != nil || got.Active != "green" || got.Generation != 2 {
		t.Fatalf("Load while unavailable = %+v, %v; want the cached green@2", got, err)
	}
	if err := s.CompareAndSwap(ctx, 2, st("blue", 3)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CompareAndSwap while unavailable = %v", err)
	}
	// A corrupt shared state is not replaced by the cache.
	shared.down.Store(false)
	os.WriteFile(shared.Path(), []byte("{"), 0o600)
	if _, err := s.Load(ctx); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Load of a corrupt shared state = %v, want its error", err)
	}
}

func TestCachedStoreSeedsEmptyStore(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	old, _ := NewFileStore(filepath.Join(t.TempDir(), "old.json"))
	prev := st("green", 7)
	prev.Previous = "blue"
	prev.History = []Event{{Action: ActionCutover, From: "blue", To: "green", Generation: 7, Trigger: TriggerCLI}}
	if err := old.CompareAndSwap(ctx, 0, prev); err != nil {
		t.Fatal(err)
	}
	missing, _ := NewFileStore(filepath.Join(t.TempDir(), "none.json"))
	shared := newFlaky(t)
	cache, _ := OpenCache(filepath.Join(t.TempDir(), "cache.json"))
	seeds := []Seed{
		{Name: "missing", Load: func() (State, error) { return missing.Load(ctx) }},
		{Name: "old", Load: func() (State, error) { return old.Load(ctx) }},
	}
	s := NewCachedStore(shared, cache, seeds, log)
	got, err := s.Load(ctx)
	if err != nil || got.Active != "green" || got.Generation != 7 || len(got.History) != 1 {
		t.Fatalf("Load of an empty store with a seed = %+v, %v", got, err)
	}
	if inShared, err := shared.FileStore.Load(ctx); err != nil || inShared.Generation != 7 {
		t.Fatalf("shared store after seeding: %+v, %v", inShared, err)
	}
	if c, _ := cache.Load(); c.Generation != 7 {
		t.Fatalf("cache after seeding: %+v", c)
	}
	// No seed holds a state: the caller sees ErrNotFound and initialises.
	empty := NewCachedStore(newFlaky(t), nil, seeds[:1], log)
	if _, err := empty.Load(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load with empty seeds = %v, want ErrNotFound", err)
	}
}
