//go:build linux

package h1

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func congestion(t *testing.T, c *net.TCPConn) string {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return cc
}

// setCongestion sets c's congestion control, or reports why it cannot
// (an algorithm the system does not allow).
func setCongestion(t *testing.T, c *net.TCPConn, cc string) error {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil {
		t.Fatal(err)
	}
	return serr
}

// TestSpliceUnpacesLoopback: a splicer to a loopback peer whose socket
// runs BBR switches that socket to Reno; its source, and a socket on any
// other algorithm, keep theirs.
func TestSpliceUnpacesLoopback(t *testing.T) {
	a, b := tcpPair(t)
	c, d := tcpPair(t)
	if err := setCongestion(t, d, "bbr"); err != nil {
		// Where BBR is not allowed the splicer has nothing to switch:
		// what the sockets run must stay as it is.
		t.Logf("bbr not settable here (%v): checking that nothing changes", err)
	}
	if err := setCongestion(t, b, "bbr"); err != nil {
		t.Logf("bbr on the source: %v", err)
	}
	srcBefore, dstBefore := congestion(t, b), congestion(t, d)
	sp := newSplicer(b, d)
	if sp == nil {
		t.Fatal("no splicer between two loopback TCP connections")
	}
	defer sp.close()
	want := dstBefore
	if dstBefore == "bbr" {
		want = unpacedCC
	}
	if got := congestion(t, d); got != want {
		t.Errorf("destination runs %q after newSplicer, want %q (was %q)", got, want, dstBefore)
	}
	if got := congestion(t, b); got != srcBefore {
		t.Errorf("source runs %q after newSplicer, want it unchanged (%q)", got, srcBefore)
	}

	// The bytes still go through.
	go func() { _, _ = a.Write([]byte("0123456789")) }()
	if n, err := sp.drain(10); err != nil || n == 0 {
		t.Fatalf("drain: %d, %v", n, err)
	}
	if _, err := sp.pump(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if n, err := c.Read(buf); err != nil || n == 0 {
		t.Fatalf("read at the destination's peer: %d, %v", n, err)
	}
}

// TestWantUnpaced: only BBR sockets to a loopback address are switched.
func TestWantUnpaced(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		cc   string
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, "bbr", true},
		{&net.TCPAddr{IP: net.IPv4(127, 3, 2, 1), Port: 80}, "bbr", true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 80}, "bbr", true},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, "cubic", false},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, "reno", false},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 80}, "bbr", false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 80}, "bbr", false},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "bbr", false},
	} {
		if got := wantUnpaced(tc.addr, tc.cc); got != tc.want {
			t.Errorf("wantUnpaced(%v, %q) = %v, want %v", tc.addr, tc.cc, got, tc.want)
		}
	}
}
