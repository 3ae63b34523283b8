package state

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// FileStore is a Store that keeps the state in one JSON file (see Encode).
//
// Writes replace the file atomically: the new state is written to a temporary
// file in the same directory, synced, renamed over the target and the
// directory is synced, so a reader or a crash sees either the old file or the
// new one, never a torn one. Temporary files are removed on failure.
//
// A FileStore is safe for concurrent use. CompareAndSwap calls on one
// FileStore are serialised; two FileStores (or two processes) sharing a path
// are not, so give each path exactly one FileStore. Watch reports only the
// states stored through this FileStore, not changes made to the file by
// anything else. A FileStore must not be copied.
type FileStore struct {
	path string
	dir  string

	// rename and syncFile are os.Rename and (*os.File).Sync; tests replace
	// them on their own instance to simulate failures.
	rename   func(oldpath, newpath string) error
	syncFile func(*os.File) error

	// mu serialises CompareAndSwap, guards watchers and is held whenever
	// closed is set. It is never held across a blocking channel operation.
	mu       sync.Mutex
	watchers map[*watcher]struct{}
	closed   atomic.Bool // read without mu by Load
	lockFile *os.File    // held by Lock until Close; nil: not locked
}

// ErrInUse reports a state file that another store holds (see Lock).
var ErrInUse = errors.New("the state file is in use by another process")

// ErrCorrupt reports a state file that does not decode (Load).
var ErrCorrupt = errors.New("corrupt state file")

// watcher is one Watch call: a one-slot channel holding the latest state
// not yet received, and the function that cancels its context hook.
type watcher struct {
	ch   chan State
	stop func() bool
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a FileStore for the file at path. It does not create
// the file (an absent file is an empty store), but the directory that will
// hold it must exist; otherwise the error names the path.
func NewFileStore(path string) (*FileStore, error) {
	if path == "" {
		return nil, errors.New("state: file store: empty path")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state: file store %s: directory: %w", path, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state: file store %s: %s is not a directory", path, dir)
	}
	return &FileStore{
		path:     path,
		dir:      dir,
		rename:   os.Rename,
		syncFile: (*os.File).Sync,
		watchers: make(map[*watcher]struct{}),
	}, nil
}

// Path returns the path of the state file.
func (s *FileStore) Path() string { return s.path }

// Load reads and decodes the state file. A missing file yields an error
// wrapping ErrNotFound; an unreadable or invalid file yields an error naming
// the path and the cause. Load does not take the write lock: the file is
// only ever replaced by rename, so it always sees a whole file.
func (s *FileStore) Load(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("state: load %s: %w", s.path, err)
	}
	if s.closed.Load() {
		return State{}, fmt.Errorf("state: load %s: %w", s.path, ErrClosed)
	}
	return s.read()
}

// read loads the file without checking the context or closed flag.
func (s *FileStore) read() (State, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("state: load %s: %w", s.path, ErrNotFound)
	}
	if err != nil {
		return State{}, fmt.Errorf("state: load %s: %w", s.path, err)
	}
	st, err := Decode(data)
	if err != nil {
		return State{}, fmt.Errorf("state: load %s: %w: %w", s.path, ErrCorrupt, err)
	}
	return st, nil
}

// CompareAndSwap writes next if the generation in the file equals expect
// (expect 0: the file must not exist). It re-reads the file under the write
// lock, so it never relies on a cached copy. A lost race returns an error
// wrapping ErrConflict; an unreadable or corrupt file returns that error
// rather than being overwritten. On any error the file is unchanged and no
// temporary file is left behind. On success every watcher is sent next.
//
// The rename is the commit point: once it has succeeded the swap is reported
// as done, even if the directory sync that follows fails, because the new
// state is already what Load returns.
func (s *FileStore) CompareAndSwap(ctx context.Context, expect uint64, next State) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("state: store %s: %w", s.path, err)
	}
	if next.Generation <= expect {
		return fmt.Errorf("state: store %s: next generation %d must be greater than expected generation %d", s.path, next.Generation, expect)
	}
	data, err := Encode(next)
	if err != nil {
		return fmt.Errorf("state: store %s: %w", s.path, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("state: store %s: %w", s.path, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("state: store %s: %w", s.path, err)
	}

	var current uint64
	cur, err := s.read()
	switch {
	case err == nil:
		current = cur.Generation
	case errors.Is(err, ErrNotFound):
		current = 0
	default:
		return err
	}
	if current != expect {
		if current == 0 {
			return fmt.Errorf("state: store %s: expected generation %d, store is empty: %w", s.path, expect, ErrConflict)
		}
		return fmt.Errorf("state: store %s: expected generation %d, stored generation is %d: %w", s.path, expect, current, ErrConflict)
	}

	if err := s.replace(data); err != nil {
		return fmt.Errorf("state: store %s: %w", s.path, err)
	}
	// Best effort: the rename has committed the state (see above).
	_ = syncDir(s.dir)

	// Watchers get their own copy of History, so the caller may reuse its
	// slice. Non-blocking sends under mu keep deliveries in generation order.
	next.History = slices.Clone(next.History)
	for w := range s.watchers {
		offer(w.ch, next)
	}
	return nil
}

// replace atomically puts data at s.path: temp file, write, sync, close,
// rename. The temp file is removed unless the rename succeeded.
func (s *FileStore) replace(data []byte) (err error) {
	f, err := os.CreateTemp(s.dir, "."+filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the write error matters
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := s.syncFile(f); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := s.rename(tmp, s.path); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory so that a rename in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// offer puts v in the one-slot channel ch without blocking, replacing a
// value the reader has not taken yet. Only the sender holding the store's
// mutex calls it, so after draining the slot the send cannot fail.
func offer(ch chan State, v State) {
	select {
	case ch <- v:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- v:
	default:
	}
}

// Watch returns a channel that receives every state stored through this
// FileStore after the call, with latest-value semantics: it holds at most
// one pending state, and a newer state replaces one the reader has not taken.
// The channel is closed when ctx ends or the store is closed. All watchers
// of one swap share its History slice, so receivers must not modify it.
// Watch starts no goroutine of its own; the close runs via context.AfterFunc,
// whose goroutine ends as soon as it has closed the channel.
func (s *FileStore) Watch(ctx context.Context) <-chan State {
	w := &watcher{ch: make(chan State, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		close(w.ch)
		return w.ch
	}
	s.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.watchers[w]; ok {
			delete(s.watchers, w)
			close(w.ch)
		}
	})
	return w.ch
}

// Lock takes the state file for this store until Close: an exclusive
// advisory lock (flock) on PATH.lock, next to it, which holds this
// process's id. Two proxies on one file (a shared volume, a compose
// service scaled to two) would each serve their own view of the active
// colour without a word, and the second's start would remove the first's
// temporary files as stale; a store whose file another holds is refused
// with an error wrapping ErrInUse. Where no lock can be taken (the lock
// file cannot be created in a read-only directory, the file system takes
// no locks) the store goes on without one, as before.
func (s *FileStore) Lock() error {
	lockPath := s.path + ".lock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil
	}
	if err := flock(f); err != nil {
		f.Close()
		if !errors.Is(err, ErrInUse) {
			return nil
		}
		holder := ""
		if b, err := os.ReadFile(lockPath); err == nil && len(b) > 0 {
			holder = " by process " + strings.TrimSpace(string(b))
		}
		return fmt.Errorf("state: %w: %s is held%s; give each proxy its own state file, or keep the state in etcd for a fleet",
			err, filepath.Base(lockPath), holder)
	}
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockFile != nil || s.closed.Load() {
		f.Close()
		return nil
	}
	s.lockFile = f
	return nil
}

// Close closes every Watch channel and lets go of the lock (Lock).
// Afterwards Load and CompareAndSwap return an error wrapping ErrClosed
// and Watch returns a closed channel. The state file is left as it is.
// Close is idempotent.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	s.closed.Store(true)
	if s.lockFile != nil {
		s.lockFile.Close()
		s.lockFile = nil
	}
	for w := range s.watchers {
		w.stop()
		delete(s.watchers, w)
		close(w.ch)
	}
	return nil
}

// RemoveStaleTemps removes the temporary files a crash during a write left
// next to the state file (".NAME.tmp-*" of this file only) and returns the
// paths it removed. Call it at start, before the first write: the store's
// own writes remove their temporary files themselves, and a state file has
// exactly one writer, so any such file that exists then is stale. The first
// removal that fails stops it and is returned with what was removed so far.
func (s *FileStore) RemoveStaleTemps() ([]string, error) {
	pattern := filepath.Join(s.dir, "."+escapeGlob(filepath.Base(s.path))+".tmp-*")
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("state: file store %s: find temporary files: %w", s.path, err)
	}
	var removed []string
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err != nil || !fi.Mode().IsRegular() {
			continue // gone already, or not something this store wrote
		}
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("state: file store %s: remove stale temporary file: %w", s.path, err)
		}
		removed = append(removed, m)
	}
	return removed, nil
}

// escapeGlob quotes the characters filepath.Match treats specially.
func escapeGlob(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}
