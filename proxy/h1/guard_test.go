package h1

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// bytesConn is a net.Conn that reads from a fixed input, a few bytes at a
// time so heads arrive in pieces.
type bytesConn struct {
	net.Conn
	in    []byte
	chunk int
}

func (c *bytesConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *bytesConn) Write(p []byte) (int, error)     { return len(p), nil }
func (c *bytesConn) SetReadDeadline(time.Time) error { return nil }

func guarded(in []byte, chunk int) (out []byte, refused int) {
	g := Guard(&bytesConn{in: in, chunk: max(chunk, 1)}, func() { refused++ })
	out, _ = io.ReadAll(g)
	return out, refused
}

// TestGuard: well-framed streams pass as they are (empty lines before a
// request line dropped); faulty framing is replaced by a line net/http
// refuses, and nothing after it passes.
func TestGuard(t *testing.T) {
	ok := "GET / HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\n" +
		"GET /last HTTP/1.0\r\n\r\n"
	for _, chunk := range []int{1, 7, 4096} {
		if out, n := guarded([]byte(ok), chunk); string(out) != ok || n != 0 {
			t.Fatalf("chunk %d: a well-framed stream changed (%d refused): %q", chunk, n, out)
		}
	}
	if out, _ := guarded([]byte("\r\n\r\n"+ok), 3); string(out) != ok {
		t.Fatalf("leading empty lines: %q", out)
	}
	for _, bad := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: u:p@a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
	} {
		in := "GET /first HTTP/1.1\r\nHost: a\r\n\r\n" + bad + "GET /after HTTP/1.1\r\nHost: a\r\n\r\n"
		out, n := guarded([]byte(in), 5)
		want := "GET /first HTTP/1.1\r\nHost: a\r\n\r\n" + refusedHead
		if string(out) != want || n != 1 {
			t.Errorf("%q: got %q (%d refused), want %q", bad, out, n, want)
		}
	}
}

// FuzzGuard: the guard never panics or loops on any bytes; a stream with
// no Transfer-Encoding, folding, userinfo or empty lines before a request
// line, and no upgrade, passes unchanged.
func FuzzGuard(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 3)
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n"), 1)
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 2)
	f.Fuzz(func(t *testing.T, in []byte, chunk int) {
		if chunk < 1 || chunk > 1<<16 {
			chunk = 1
		}
		out, refused := guarded(in, chunk)
		lower := bytes.ToLower(in)
		plain := !bytes.Contains(lower, []byte("transfer-encoding")) && !bytes.Contains(lower, []byte("upgrade")) &&
			!bytes.Contains(in, []byte("\n ")) && !bytes.Contains(in, []byte("\n\t")) && !bytes.Contains(in, []byte("@")) &&
			!bytes.Contains(in, []byte("\n\n")) && !bytes.Contains(in, []byte("\n\r\n")) &&
			!bytes.HasPrefix(in, []byte("\n")) && !bytes.HasPrefix(in, []byte("\r\n"))
		if plain && (refused != 0 || !bytes.Equal(out, in)) {
			// A head ends at an empty line; without one nothing is
			// complete, and the guard may hold back a partial head.
			if !bytes.HasPrefix(in, out) || refused != 0 {
				t.Fatalf("plain stream changed: in %q out %q refused %d", in, out, refused)
			}
		}
	})
}
