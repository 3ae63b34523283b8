package testkit

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ExhaustFDs leaves the process pid without a free file descriptor: it
// sets the process's limit (prlimit) to spare above the descriptors it
// holds now, then opens connections to addr, one of its listeners, until
// the process has accepted enough of them to hold every descriptor under
// the limit. It returns them in the order they were opened, the first
// accepted for sure; closing them gives the descriptors back.
func ExhaustFDs(t testing.TB, pid int, addr string, spare int) []net.Conn {
	t.Helper()
	// The limit bounds descriptor numbers (a process may hold higher ones
	// it inherited), so held counts those under it.
	limit := 1 << 30
	held := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd < limit {
				n++
			}
		}
		return n
	}
	limit = held() + spare
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(limit), Max: uint64(limit)}, nil); err != nil {
		t.Fatalf("prlimit %d: %v", pid, err)
	}
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for held() < limit && len(conns) < 2*spare {
		before := held()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		for deadline := time.Now().Add(time.Second); held() == before && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := held(); n != limit {
		t.Fatalf("process %d holds %d descriptors under its limit of %d after %d connections", pid, n, limit, len(conns))
	}
	return conns
}
