package h1

import (
	"bytes"
	"net"
	"strconv"
	"sync/atomic"
)

// Guard wraps a client connection served by net/http so that RFC 9112's
// framing rules hold there too. It follows the request stream (each head,
// then its Content-Length or chunked body) and holds every head back until
// it is whole and checked. A head with faulty framing never reaches
// net/http: Transfer-Encoding together with Content-Length (§6.1; net/http
// would re-frame it), Transfer-Encoding in an HTTP/1.0 request (§6.1),
// obsolete line folding (§5.2; net/http would unfold a folded
// Transfer-Encoding), a Host with userinfo (§3.2), an HTTP/2 preface
// ("PRI * HTTP/2.0"). net/http gets a request
// line it refuses in its place and answers 400 and closes, after the
// requests before it on the connection. Empty lines before a request line
// are dropped (§2.2). refused, when set, is called once per refused head,
// and once for a request net/http refuses itself, before any handler runs
// (a head it cannot parse, a Content-Length it does not accept, headers
// too large): its own error answer is seen as it is written.
//
// The guard stops following (and passes the bytes as they are) when the
// connection stops being HTTP/1 (a 101 answer to an upgrade) or when it
// cannot frame a body; net/http then refuses the bytes itself and closes.
func Guard(nc net.Conn, refused func()) net.Conn {
	return &guardConn{Conn: nc, refused: refused}
}

// GuardListener guards every connection ln accepts.
func GuardListener(ln net.Listener, refused func()) net.Listener {
	return guardListener{ln, refused}
}

type guardListener struct {
	net.Listener
	refused func()
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Guard(c, l.refused), nil
}

// States of the guard.
const (
	gHead      = iota // reading a head
	gBody             // rem bytes of a Content-Length body
	gChunkLine        // a chunk-size line
	gChunkData        // rem bytes of chunk data and its CRLF
	gTrailer          // trailer lines up to the blank line
	gUpgrade          // after an upgrade request: a 101 switches to gPass
	gPass             // not HTTP/1 any more, or not framable: bytes as they are
	gRefused          // a faulty head was replaced: nothing more
)

const (
	maxGuardHead = 1 << 20 // beyond net/http's MaxHeaderBytes: it answers 431 first
	maxGuardLine = 4096
)

// refusedHead replaces a faulty head: net/http answers 400 and closes.
const refusedHead = "FAULTY-FRAMING\r\n\r\n"

type guardConn struct {
	net.Conn
	refused func()

	state   int
	rem     int64
	buf     []byte // bytes read and not yet followed
	pending []byte // bytes followed and not yet returned
	// An upgrade request was passed on (upgradeWait) and the answer
	// written was a 101 (switched); Write runs on another goroutine.
	upgradeWait, switched atomic.Bool
	// The guard refused a head and counted it: net/http's answer to the
	// head put in its place is not counted again.
	counted atomic.Bool
}

func (g *guardConn) Write(p []byte) (int, error) {
	if g.upgradeWait.Load() && bytes.HasPrefix(p, []byte("HTTP/1.1 101")) {
		g.switched.Store(true)
	}
	if g.refused != nil && !g.counted.Load() && isRefusal(p) {
		g.counted.Store(true) // net/http closes the connection after it
		g.refused()
	}
	return g.Conn.Write(p)
}

// refusalHeaders follow the status line of the answer net/http writes
// itself to a request it refuses before any handler runs (400, 431, 501);
// a handler's answer always carries more (Date, Content-Length).
var refusalHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

// isRefusal reports whether p is such an answer.
func isRefusal(p []byte) bool {
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(p, []byte("HTTP/1.1 5")) {
		return false
	}
	i := bytes.Index(p, refusalHeaders)
	return i > 0 && bytes.IndexByte(p[:i], '\n') < 0
}

// CloseWrite lets net/http half-close after an error response.
func (g *guardConn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (g *guardConn) Read(p []byte) (int, error) {
	for {
		if len(g.pending) > 0 {
			n := copy(p, g.pending)
			g.pending = g.pending[n:]
			return n, nil
		}
		switch g.state {
		case gRefused:
			return 0, net.ErrClosed
		case gPass:
			if len(g.buf) > 0 {
				g.pending, g.buf = g.buf, nil
				continue
			}
			return g.Conn.Read(p)
		case gUpgrade:
			// Decide when the next bytes arrive: by then a 101 was
			// written, or the upgrade was not taken.
			if len(g.buf) == 0 {
				if err := g.more(); err != nil {
					return 0, err
				}
				continue
			}
			g.upgradeWait.Store(false)
			if g.switched.Load() {
				g.state = gPass
			} else {
				g.state = gHead
			}
			continue
		case gBody, gChunkData:
			if len(g.buf) > 0 {
				n := int(min(int64(len(g.buf)), g.rem))
				g.pending, g.buf = g.buf[:n:n], g.buf[n:]
				g.advance(n)
				continue
			}
			n, err := g.Conn.Read(p[:min(int64(len(p)), g.rem)])
			g.advance(n)
			return n, err
		}
		// gHead, gChunkLine, gTrailer: whole lines are needed.
		if !g.step() {
			if err := g.more(); err != nil {
				if len(g.buf) > 0 && g.state != gHead {
					g.pending, g.buf = g.buf, nil // let net/http see how it ends
					continue
				}
				return 0, err
			}
		}
	}
}

// advance counts n body bytes passed on.
func (g *guardConn) advance(n int) {
	g.rem -= int64(n)
	if g.rem > 0 {
		return
	}
	switch g.state {
	case gBody:
		g.state = gHead
	case gChunkData:
		g.state = gChunkLine
	}
}

// more reads from the connection into buf.
func (g *guardConn) more() error {
	if len(g.buf) > maxGuardHead {
		g.state = gPass // net/http refuses a head this large
		return nil
	}
	var tmp [4096]byte
	n, err := g.Conn.Read(tmp[:])
	g.buf = append(g.buf, tmp[:n]...)
	if n > 0 {
		return nil
	}
	return err
}

// step follows what buf holds in a line state; false when more bytes are
// needed.
func (g *guardConn) step() bool {
	switch g.state {
	case gHead:
		for len(g.buf) > 0 && (g.buf[0] == '\n' || g.buf[0] == '\r' && len(g.buf) > 1 && g.buf[1] == '\n') {
			if g.buf[0] == '\r' {
				g.buf = g.buf[1:]
			}
			g.buf = g.buf[1:] // an empty line before a request line
		}
		end := headEnd(g.buf)
		if end < 0 {
			return false
		}
		head := g.buf[:end:end]
		g.buf = g.buf[end:]
		g.checkHead(head)
		return true
	case gChunkLine, gTrailer:
		i := bytes.IndexByte(g.buf, '\n')
		if i < 0 {
			if len(g.buf) > maxGuardLine {
				g.state = gPass
				return true
			}
			return false
		}
		line := g.buf[: i+1 : i+1]
		g.buf = g.buf[i+1:]
		g.pending = line
		text := bytes.TrimRight(line, "\r\n")
		if g.state == gTrailer {
			if len(text) == 0 {
				g.state = gHead
			}
			return true
		}
		if j := bytes.IndexByte(text, ';'); j >= 0 {
			text = text[:j]
		}
		size, err := strconv.ParseUint(string(bytes.Trim(text, " \t")), 16, 63)
		switch {
		case err != nil:
			g.state = gPass // net/http refuses the chunk and closes
		case size == 0:
			g.state = gTrailer
		default:
			g.state, g.rem = gChunkData, int64(size)+2
		}
		return true
	}
	return true
}

// headEnd returns the length of the head at the start of b up to and
// including its empty line (lines end in LF, a CR before it optional, as
// net/http reads them), or -1.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return i
		}
	}
}

// checkHead decides about a whole head: refused, or passed on with the
// framing of its body.
func (g *guardConn) checkHead(head []byte) {
	var (
		first             = true
		http10, upgrade   bool
		te, cl, badCL     bool
		chunked, badFrame bool
		length            int64 = -1
	)
	for rest := head; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := bytes.TrimSuffix(rest[:i], []byte("\r"))
		rest = rest[i+1:]
		if len(line) == 0 {
			break
		}
		if first {
			first = false
			http10 = bytes.HasSuffix(line, []byte(" HTTP/1.0"))
			// An HTTP/2 preface on an HTTP/1 listener: net/http would pass
			// it to the handler, which would forward "PRI /%2A".
			badFrame = string(line) == "PRI * HTTP/2.0"
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			badFrame = true // obsolete line folding
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue // net/http refuses it
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		switch {
		case equalFold(name, "transfer-encoding"):
			te = true
			chunked = equalFold(value, "chunked")
		case equalFold(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok || cl && n != length {
				badCL = true
			}
			cl, length = true, n
		case equalFold(name, "host"):
			if bytes.IndexByte(value, '@') >= 0 {
				badFrame = true // userinfo
			}
		case equalFold(name, "upgrade"):
			upgrade = true
		}
	}
	if badFrame || te && cl || te && http10 {
		if g.refused != nil {
			g.counted.Store(true)
			g.refused()
		}
		g.pending = []byte(refusedHead)
		g.state, g.buf = gRefused, nil
		return
	}
	g.pending = head
	switch {
	case te && !chunked, badCL:
		g.state = gPass // net/http refuses it and closes
	case te:
		g.state = gChunkLine
	case length > 0:
		g.state, g.rem = gBody, length
	case upgrade:
		g.state = gUpgrade
		g.upgradeWait.Store(true)
	default:
		g.state = gHead
	}
}
