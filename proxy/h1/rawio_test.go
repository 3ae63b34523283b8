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

// sendFill writes the request inside the wait for its answer and reads the
// answer's first bytes: a request larger than the socket buffers (the
// socket takes part of it, the rest goes the usual way), a pooled
// connection the peer closed, and one holding bytes nobody asked for (both
// ErrStaleConn, with nothing written).
func TestSendFill(t *testing.T) {
	t.Run("large request", func(t *testing.T) {
		a, b := tcpPair(t)
		ca := newConnReader(a, func() []byte { return make([]byte, 64) }, func([]byte) {})
		if ca.rc == nil {
			t.Skip("no raw access to sockets on this system")
		}
		req := make([]byte, 4<<20)
		for i := range req {
			req[i] = byte(i * 13)
		}
		got := make(chan []byte, 1)
		go func() {
			buf := make([]byte, len(req))
			_, err := io.ReadFull(b, buf)
			if err == nil {
				_, err = b.Write([]byte("answer"))
			}
			if err != nil {
				buf = nil
			}
			got <- buf
		}()
		if err := ca.sendFill(req, true); err != nil {
			t.Fatal(err)
		}
		if string(<-got) != string(req) {
			t.Fatal("the instance got other bytes than the request")
		}
		for ca.buffered() < len("answer") {
			if err := ca.fill(); err != nil {
				t.Fatal(err)
			}
		}
		if string(ca.bytes()) != "answer" {
			t.Fatalf("answer %q", ca.bytes())
		}
	})
	for _, tc := range []struct {
		name string
		peer func(*net.TCPConn)
	}{
		{"closed by the peer", func(b *net.TCPConn) { _ = b.Close() }},
		{"unsolicited bytes", func(b *net.TCPConn) { _, _ = b.Write([]byte("HTTP/1.1 200 OK\r\n")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			ca := newConnReader(a, func() []byte { return make([]byte, 64) }, func([]byte) {})
			if ca.rc == nil {
				t.Skip("no raw access to sockets on this system")
			}
			tc.peer(b)
			// Wait until the peer's bytes or end are in a's socket.
			for deadline := time.Now().Add(5 * time.Second); ca.peekState() == peekNothing; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the peer's bytes never arrived")
				}
			}
			if err := ca.sendFill([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), true); err != ErrStaleConn {
				t.Fatalf("sendFill: %v, want ErrStaleConn", err)
			}
			if tc.name == "unsolicited bytes" {
				_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if n, err := b.Read(make([]byte, 64)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the peer read %d bytes (%v): the request was written to a stale connection", n, err)
				}
			}
		})
	}
}
