package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// ErrUnavailable reports that a store did not answer (for etcd: no
// reachable member, or no quorum). Stores that can be unreachable wrap it,
// so that a [CachedStore] can tell "unreachable" from "empty" or "corrupt".
var ErrUnavailable = errors.New("state store unavailable")

// Cache is a replica's local, crash-safe copy of the last state it applied
// from a shared store. It is written like a [FileStore] (temporary file,
// fsync, rename, directory fsync), so a crash leaves the old copy or the new
// one, never a torn file. A Cache is safe for concurrent use and must not be
// copied.
type Cache struct {
	fs  *FileStore
	mu  sync.Mutex
	gen uint64 // generation of the copy on disk, 0 before the first Load or Save
}

// OpenCache returns the cache kept at path. The directory must exist; the
// file need not (an absent file is an empty cache).
func OpenCache(path string) (*Cache, error) {
	fs, err := NewFileStore(path)
	if err != nil {
		return nil, fmt.Errorf("state cache: %w", err)
	}
	return &Cache{fs: fs}, nil
}

// Path returns the cache file's path.
func (c *Cache) Path() string { return c.fs.path }

// Load returns the cached state, or an error wrapping ErrNotFound when there
// is none. A corrupt file is an error naming the path.
func (c *Cache) Load() (State, error) {
	st, err := c.fs.read()
	if err != nil {
		return State{}, fmt.Errorf("state cache: %w", err)
	}
	c.mu.Lock()
	c.gen = max(c.gen, st.Generation)
	c.mu.Unlock()
	return st, nil
}

// Save replaces the cached state with st if st is newer than the copy this
// Cache last read or wrote (an older or equal generation is ignored, so a
// late delivery never moves the copy back). The write is atomic and synced.
func (c *Cache) Save(st State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.Generation <= c.gen {
		return nil
	}
	data, err := Encode(st)
	if err != nil {
		return fmt.Errorf("state cache %s: %w", c.fs.path, err)
	}
	if err := c.fs.replace(data); err != nil {
		return fmt.Errorf("state cache %s: %w", c.fs.path, err)
	}
	_ = syncDir(c.fs.dir) // the rename has committed the copy (see FileStore)
	c.gen = st.Generation
	return nil
}

// CachedStore is a shared Store (etcd) with a replica's local [Cache] in
// front of it, so that the replica can start and serve while the shared
// store is unreachable:
//
//   - Load reads the shared store and records the answer in the cache. When
//     the shared store is unavailable (an error wrapping ErrUnavailable) it
//     returns the cached copy instead, if there is one; the error otherwise.
//   - When the shared store answers that it holds no state, Load seeds it
//     with the first state found in Seeds (a file state of a previous
//     single-proxy run, then the cache), by CompareAndSwap from empty, and
//     returns what the store then holds.
//   - CompareAndSwap goes to the shared store only (a switch needs it); a
//     stored state is recorded in the cache.
//   - Watch passes on the shared store's states and records each in the
//     cache: the cache always holds the newest state the replica was given
//     to apply.
//
// Cache write failures are logged and never fail an operation: routing
// does not depend on the local copy. CachedStore is safe for concurrent use.
type CachedStore struct {
	Store
	cache *Cache
	seeds []Seed
	log   *slog.Logger
	wg    sync.WaitGroup
}

// Seed is a place an empty shared store may be initialised from.
type Seed struct {
	Name string                // for logs, e.g. "file:/data/state.json"
	Load func() (State, error) // ErrNotFound when the seed holds nothing
}

// NewCachedStore puts cache in front of primary. cache may be nil (no local
// copy: only seeding applies). seeds (may be empty) are tried in order when
// primary is empty. log must not be nil.
func NewCachedStore(primary Store, cache *Cache, seeds []Seed, log *slog.Logger) *CachedStore {
	return &CachedStore{Store: primary, cache: cache, seeds: seeds, log: log}
}

// Unwrap returns the shared store behind the cache.
func (s *CachedStore) Unwrap() Store { return s.Store }

func (s *CachedStore) save(st State) {
	if s.cache == nil {
		return
	}
	if err := s.cache.Save(st); err != nil {
		s.log.Error("state cache not written; routing is unaffected, but a restart during an outage of the state store would start from an older copy", "err", err)
	}
}

// Load implements Store; see CachedStore.
func (s *CachedStore) Load(ctx context.Context) (State, error) {
	st, err := s.Store.Load(ctx)
	switch {
	case err == nil:
		s.save(st)
		return st, nil
	case errors.Is(err, ErrNotFound):
		return s.seed(ctx, err)
	case errors.Is(err, ErrUnavailable) && s.cache == nil:
		return State{}, fmt.Errorf("%w; no state cache configured", err)
	case errors.Is(err, ErrUnavailable):
		cached, cerr := s.cache.Load()
		if cerr != nil {
			if errors.Is(cerr, ErrNotFound) {
				return State{}, fmt.Errorf("%w; no cached state at %s", err, s.cache.Path())
			}
			return State{}, fmt.Errorf("%w; cached state unusable: %w", err, cerr)
		}
		s.log.Warn("state store unreachable: serving the cached state until it answers; switches are refused meanwhile",
			"cache", s.cache.Path(), "active", cached.Active, "generation", cached.Generation, "err", err)
		return cached, nil
	default:
		return State{}, err
	}
}

// seed initialises an empty shared store from the first seed that holds a
// state. notFound is returned when none does, so the caller initialises it.
func (s *CachedStore) seed(ctx context.Context, notFound error) (State, error) {
	for _, sd := range s.seeds {
		st, err := sd.Load()
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return State{}, fmt.Errorf("state store is empty and its seed %s is unreadable: %w", sd.Name, err)
		}
		err = s.Store.CompareAndSwap(ctx, 0, st)
		if err != nil && !errors.Is(err, ErrConflict) {
			return State{}, fmt.Errorf("seed the empty state store from %s: %w", sd.Name, err)
		}
		if err == nil {
			s.log.Warn("state store was empty: initialised it from an existing state", "from", sd.Name,
				"active", st.Active, "previous", st.Previous, "generation", st.Generation, "switches", len(st.History))
		}
		// On a conflict another replica initialised it first: use theirs.
		return s.Load(ctx)
	}
	return State{}, notFound
}

// CompareAndSwap implements Store; a stored state is also cached.
func (s *CachedStore) CompareAndSwap(ctx context.Context, expect uint64, next State) error {
	if err := s.Store.CompareAndSwap(ctx, expect, next); err != nil {
		return err
	}
	next.History = slices.Clone(next.History)
	s.save(next)
	return nil
}

// Watch implements Store; every state delivered is cached first. One
// goroutine per call runs until the shared store's channel closes.
func (s *CachedStore) Watch(ctx context.Context) <-chan State {
	in := s.Store.Watch(ctx)
	out := make(chan State, 1)
	s.wg.Go(func() {
		defer close(out)
		for st := range in {
			s.save(st)
			offer(out, st)
		}
	})
	return out
}

// Close closes the shared store and waits for the Watch goroutines.
func (s *CachedStore) Close() error {
	err := s.Store.Close()
	s.wg.Wait()
	return err
}
