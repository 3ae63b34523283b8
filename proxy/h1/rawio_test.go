package h1

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func rawReader(t *testing.T, nc net.Conn) *connReader {
	t.Helper()
	cr := newConnReader(nc, func() []byte { return make([]byte, 64) }, func([]byte) {})
	if cr.rc == nil {
		t.Skip("no raw access to sockets on this system")
	}
	return cr
}

// The raw reads and writes move the bytes and report the ends of a
// connection as net.Conn's Read and Write do: EOF, a deadline, a reset, a
// write to a connection the peer closed, a connection closed under them.
func TestRawIOAsNetConn(t *testing.T) {
	a, b := tcpPair(t)
	ca, cb := rawReader(t, a), rawReader(t, b)

	msg := make([]byte, 3<<20) // more than the socket buffers: writes wait for the poller
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := ca.write(msg)
		if err == nil && n != len(msg) {
			err = errors.New("short write")
		}
		done <- err
	}()
	got := make([]byte, 0, len(msg))
	buf := make([]byte, 32<<10)
	for len(got) < len(msg) {
		n, err := cb.read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatal("bytes differ")
	}

	// A deadline: a timeout, as net.Conn reports it.
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := cb.read(buf)
	var ne net.Error
	var oe *net.OpError
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read past the deadline: %v, want a read timeout", err)
	}
	_ = b.SetReadDeadline(time.Time{})

	// The peer closes: EOF, as net.Conn reports it.
	a.CloseWrite()
	if n, err := cb.read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's FIN: %d, %v; want 0, io.EOF", n, err)
	}

	// The peer resets: writes fail with EPIPE or ECONNRESET in a *net.OpError.
	a.SetLinger(0)
	a.Close()
	time.Sleep(20 * time.Millisecond)
	var werr error
	for i := 0; i < 10 && werr == nil; i++ {
		_, werr = cb.write([]byte("x"))
	}
	if !(errors.Is(werr, syscall.EPIPE) || errors.Is(werr, syscall.ECONNRESET)) || !errors.As(werr, &oe) || oe.Op != "write" {
		t.Fatalf("write to a reset connection: %v", werr)
	}

	// Closed under the reader: net.ErrClosed.
	b.Close()
	if _, err := cb.read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
	}
}

// A reset seen by a read is ECONNRESET, which the pipeline judges a reset.
func TestRawReadReset(t *testing.T) {
	a, b := tcpPair(t)
	cb := rawReader(t, b)
	a.SetLinger(0)
	a.Close()
	_, err := cb.read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v, want ECONNRESET", err)
	}
}
