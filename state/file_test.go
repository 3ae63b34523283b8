package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// newStore returns a FileStore on state.json in a fresh temporary directory.
func newStore(t *testing.T) *FileStore {
	t.Helper()
	s, err := NewFileStore(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("NewFileStore: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// leftovers returns the names in the store's directory other than the state
// file itself: temporary files that should not be there.
func leftovers(t *testing.T, s *FileStore) []string {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != filepath.Base(s.path) {
			names = append(names, e.Name())
		}
	}
	return names
}

// fileBytes returns the content of the state file, or nil if it is absent.
func fileBytes(t *testing.T, s *FileStore) []byte {
	t.Helper()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return data
}

func mustCAS(t *testing.T, s Store, expect uint64, next State) {
	t.Helper()
	if err := s.CompareAndSwap(context.Background(), expect, next); err != nil {
		t.Fatalf("CompareAndSwap(%d, gen %d): %v", expect, next.Generation, err)
	}
}

func mustLoad(t *testing.T, s Store) State {
	t.Helper()
	st, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

func TestFileStoreRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		steps []State // stored in order, each expecting the previous generation
	}{
		{"first cutover", []State{sample(1)}},
		{"history grows", []State{sample(1), sample(2), sample(3), sample(4)}},
		{"generation jumps", []State{sample(1), sample(5)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			if _, err := s.Load(ctx); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load on empty store = %v, want ErrNotFound", err)
			}
			var expect uint64
			for _, next := range tt.steps {
				mustCAS(t, s, expect, next)
				if got := mustLoad(t, s); !equalState(got, next) {
					t.Fatalf("Load after CAS:\n got %+v\nwant %+v", got, next)
				}
				expect = next.Generation
			}
			if left := leftovers(t, s); len(left) != 0 {
				t.Errorf("files left behind: %v", left)
			}
			fi, err := os.Stat(s.path)
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode().Perm(); mode != 0o600 {
				t.Errorf("file mode = %v, want 0600", mode)
			}

			// A restart: a new store on the same path sees the same state.
			restarted, err := NewFileStore(s.path)
			if err != nil {
				t.Fatalf("NewFileStore after restart: %v", err)
			}
			defer restarted.Close()
			last := tt.steps[len(tt.steps)-1]
			if got := mustLoad(t, restarted); !equalState(got, last) {
				t.Errorf("Load after restart:\n got %+v\nwant %+v", got, last)
			}
		})
	}
}

func TestFileStoreConflict(t *testing.T) {
	tests := []struct {
		name    string
		initial []State // stored before the conflicting call
		expect  uint64
		next    State
	}{
		{"stale generation", []State{sample(1), sample(2)}, 1, sample(3)},
		{"generation ahead", []State{sample(1)}, 2, sample(3)},
		{"expect empty but stored", []State{sample(1)}, 0, sample(2)},
		{"expect stored but empty", nil, 1, sample(2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			var expect uint64
			for _, st := range tt.initial {
				mustCAS(t, s, expect, st)
				expect = st.Generation
			}
			before := fileBytes(t, s)
			err := s.CompareAndSwap(context.Background(), tt.expect, tt.next)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("CompareAndSwap = %v, want ErrConflict", err)
			}
			if !strings.Contains(err.Error(), s.path) {
				t.Errorf("error %q does not name %s", err, s.path)
			}
			if after := fileBytes(t, s); !slices.Equal(before, after) {
				t.Errorf("file changed by a failed swap:\nbefore %s\nafter  %s", before, after)
			}
			if left := leftovers(t, s); len(left) != 0 {
				t.Errorf("files left behind: %v", left)
			}
		})
	}
}

func TestFileStoreRejectsInvalidNext(t *testing.T) {
	tests := []struct {
		name   string
		expect uint64
		next   State
	}{
		{"generation equal to expect", 1, sample(1)},
		{"generation below expect", 1, State{Active: "blue"}},
		{"empty active", 1, State{Generation: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			mustCAS(t, s, 0, sample(1))
			before := fileBytes(t, s)
			err := s.CompareAndSwap(context.Background(), tt.expect, tt.next)
			if err == nil {
				t.Fatal("CompareAndSwap succeeded, want error")
			}
			if errors.Is(err, ErrConflict) {
				t.Errorf("error %q wraps ErrConflict; an invalid argument is not a conflict", err)
			}
			if after := fileBytes(t, s); !slices.Equal(before, after) {
				t.Errorf("file changed by a failed swap")
			}
		})
	}
}

// writerState is sample(gen) marked as written by writer i.
func writerState(gen uint64, i int) State {
	s := sample(gen)
	s.ChangedAt = s.ChangedAt.Add(time.Duration(i) * time.Second)
	return s
}

func TestFileStoreConcurrentCAS(t *testing.T) {
	const writers = 8
	for _, expect := range []uint64{0, 1} {
		t.Run(fmt.Sprintf("expect %d", expect), func(t *testing.T) {
			s := newStore(t)
			if expect > 0 {
				mustCAS(t, s, 0, sample(expect))
			}
			start := make(chan struct{})
			errs := make([]error, writers)
			var wg sync.WaitGroup
			for i := range writers {
				wg.Go(func() {
					next := writerState(expect+1, i)
					<-start
					errs[i] = s.CompareAndSwap(context.Background(), expect, next)
				})
			}
			close(start)
			wg.Wait()

			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("writers %d and %d both won", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, ErrConflict):
					t.Errorf("writer %d: %v, want ErrConflict", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no writer won")
			}
			want := writerState(expect+1, winner)
			if got := mustLoad(t, s); !equalState(got, want) {
				t.Errorf("stored state is not the winner's:\n got %+v\nwant %+v", got, want)
			}
			if left := leftovers(t, s); len(left) != 0 {
				t.Errorf("files left behind: %v", left)
			}
		})
	}
}

func TestFileStoreCorruptFile(t *testing.T) {
	valid := string(mustEncode(t, sample(2)))
	tests := []struct {
		name    string
		content string
	}{
		{"garbage", "\x7fELF\x02\x01\x01 definitely not a state file"},
		{"truncated JSON", valid[:len(valid)-10]},
		{"empty file", ""},
		{"format 99", strings.Replace(valid, `"format": 1`, `"format": 99`, 1)},
		{"generation 0", strings.Replace(valid, `"generation": 2,`, `"generation": 0,`, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(s.path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.Load(context.Background())
			if err == nil {
				t.Fatal("Load succeeded on a corrupt file")
			}
			if errors.Is(err, ErrNotFound) {
				t.Fatalf("Load = %v: a corrupt file must not look like an empty store", err)
			}
			if !strings.Contains(err.Error(), s.path) {
				t.Errorf("error %q does not name %s", err, s.path)
			}

			// A swap must not overwrite what it cannot read.
			for _, expect := range []uint64{0, 2} {
				err := s.CompareAndSwap(context.Background(), expect, sample(3))
				if err == nil || errors.Is(err, ErrConflict) {
					t.Errorf("CompareAndSwap(%d) over a corrupt file = %v, want the read error", expect, err)
				}
			}
			if got := string(fileBytes(t, s)); got != tt.content {
				t.Errorf("corrupt file was changed to %q", got)
			}
		})
	}
}

func TestFileStoreUnreadable(t *testing.T) {
	// Tests may run as root, where permissions do not stop a read; a
	// directory at the path does.
	s := newStore(t)
	if err := os.Mkdir(s.path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(context.Background())
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Load = %v, want a read error", err)
	}
	if !strings.Contains(err.Error(), s.path) {
		t.Errorf("error %q does not name %s", err, s.path)
	}
	if err := s.CompareAndSwap(context.Background(), 0, sample(1)); err == nil {
		t.Error("CompareAndSwap over an unreadable path succeeded")
	}
}

func TestFileStoreWriteFailure(t *testing.T) {
	errInjected := errors.New("injected failure")
	tests := []struct {
		name    string
		initial bool // store sample(1) first
		break_  func(t *testing.T, s *FileStore)
	}{
		{
			name: "directory removed",
			break_: func(t *testing.T, s *FileStore) {
				if err := os.RemoveAll(s.dir); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:    "rename fails",
			initial: true,
			break_: func(t *testing.T, s *FileStore) {
				s.rename = func(string, string) error { return errInjected }
			},
		},
		{
			name:    "fsync fails",
			initial: true,
			break_: func(t *testing.T, s *FileStore) {
				s.syncFile = func(*os.File) error { return errInjected }
			},
		},
		{
			name: "rename fails on empty store",
			break_: func(t *testing.T, s *FileStore) {
				s.rename = func(string, string) error { return errInjected }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			var expect uint64
			if tt.initial {
				mustCAS(t, s, 0, sample(1))
				expect = 1
			}
			before := fileBytes(t, s)
			watch := s.Watch(t.Context())
			tt.break_(t, s)

			err := s.CompareAndSwap(context.Background(), expect, sample(expect+1))
			if err == nil {
				t.Fatal("CompareAndSwap succeeded despite the failure")
			}
			if !strings.Contains(err.Error(), s.path) {
				t.Errorf("error %q does not name %s", err, s.path)
			}
			if after := fileBytes(t, s); !slices.Equal(before, after) {
				t.Errorf("file changed by a failed swap")
			}
			if tt.initial {
				if got := mustLoad(t, s); !equalState(got, sample(1)) {
					t.Errorf("Load after failed swap = %+v, want the old state", got)
				}
			} else if _, err := s.Load(context.Background()); !errors.Is(err, ErrNotFound) {
				t.Errorf("Load after failed swap = %v, want ErrNotFound", err)
			}
			if left := leftovers(t, s); len(left) != 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
			select {
			case st := <-watch:
				t.Errorf("watcher told of a failed swap: %+v", st)
			default:
			}
		})
	}
}

func TestNewFileStore(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantErr bool
	}{
		{"existing directory", filepath.Join(dir, "state.json"), false},
		{"missing directory", filepath.Join(dir, "nope", "state.json"), true},
		{"parent is a file", filepath.Join(file, "state.json"), true},
		{"empty path", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewFileStore(tt.path)
			if tt.wantErr {
				if err == nil {
					t.Fatal("NewFileStore succeeded, want error")
				}
				if !strings.Contains(err.Error(), tt.path) {
					t.Errorf("error %q does not name %q", err, tt.path)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewFileStore: %v", err)
			}
			defer s.Close()
			if s.Path() != tt.path {
				t.Errorf("Path() = %q, want %q", s.Path(), tt.path)
			}
			if _, err := os.Stat(tt.path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("NewFileStore created the file (stat: %v)", err)
			}
		})
	}
}

func TestFileStoreWatch(t *testing.T) {
	tests := []struct {
		name  string
		swaps int // states stored before the reader looks
	}{
		{"one state", 1},
		{"slow reader gets the newest", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newStore(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				w1, w2 := s.Watch(ctx), s.Watch(ctx)
				for g := 1; g <= tt.swaps; g++ {
					mustCAS(t, s, uint64(g-1), sample(uint64(g)))
				}
				want := sample(uint64(tt.swaps))
				for i, w := range []<-chan State{w1, w2} {
					select {
					case got := <-w:
						if !equalState(got, want) {
							t.Errorf("watcher %d got generation %d, want %d", i, got.Generation, want.Generation)
						}
					default:
						t.Fatalf("watcher %d received nothing", i)
					}
					select {
					case got := <-w:
						t.Errorf("watcher %d got a second, stale state: generation %d", i, got.Generation)
					default:
					}
				}

				cancel()
				synctest.Wait() // the context hooks have run
				for i, w := range []<-chan State{w1, w2} {
					select {
					case _, ok := <-w:
						if ok {
							t.Errorf("watcher %d received a state after cancel", i)
						}
					default:
						t.Errorf("watcher %d not closed after cancel", i)
					}
				}
				s.mu.Lock()
				n := len(s.watchers)
				s.mu.Unlock()
				if n != 0 {
					t.Errorf("%d watchers still registered after cancel", n)
				}
				// A swap after cancel must not panic on a closed channel.
				mustCAS(t, s, uint64(tt.swaps), sample(uint64(tt.swaps+1)))
			})
		})
	}
}

func TestFileStoreWatchSeesOnlyLaterStates(t *testing.T) {
	s := newStore(t)
	mustCAS(t, s, 0, sample(1))
	w := s.Watch(t.Context())
	select {
	case st := <-w:
		t.Fatalf("watcher got a state stored before Watch: generation %d", st.Generation)
	default:
	}
	mustCAS(t, s, 1, sample(2))
	if got := <-w; got.Generation != 2 {
		t.Errorf("watcher got generation %d, want 2", got.Generation)
	}
}

func TestFileStoreWatchCancelledContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := s.Watch(ctx)
		synctest.Wait()
		if _, ok := <-w; ok {
			t.Error("watch on a cancelled context delivered a state")
		}
	})
}

func TestFileStoreClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t)
		mustCAS(t, s, 0, sample(1))
		w := s.Watch(context.Background())
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, ok := <-w; ok {
			t.Error("watch channel delivered a state after Close")
		}
		if _, ok := <-s.Watch(context.Background()); ok {
			t.Error("Watch after Close returned an open channel")
		}
		if err := s.CompareAndSwap(context.Background(), 1, sample(2)); !errors.Is(err, ErrClosed) {
			t.Errorf("CompareAndSwap after Close = %v, want ErrClosed", err)
		}
		if _, err := s.Load(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Load after Close = %v, want ErrClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		// The file is untouched by Close.
		reopened, err := NewFileStore(s.path)
		if err != nil {
			t.Fatal(err)
		}
		defer reopened.Close()
		if got := mustLoad(t, reopened); !equalState(got, sample(1)) {
			t.Errorf("state after Close = %+v, want generation 1", got)
		}
	})
}

func TestFileStoreCancelledContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CompareAndSwap(ctx, 0, sample(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("CompareAndSwap = %v, want context.Canceled", err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Load = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(s.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled swap wrote the file (stat: %v)", err)
	}
}

// A state file opened by one store is refused to a second (another proxy
// on the same file, in this process or another), with an error that says
// so and names the holder; once the first is closed, the second opens.
func TestOpenHoldsTheStateFile(t *testing.T) {
	spec := "file:" + filepath.Join(t.TempDir(), "state.json")
	first, err := Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(spec)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "by process "+strconv.Itoa(os.Getpid())) ||
		!strings.Contains(err.Error(), "give each proxy its own state file") {
		t.Fatalf("second Open: %v, want ErrInUse naming this process", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := Open(spec)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	second.Close()
}
