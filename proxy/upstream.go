package proxy

import (
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// upstream is the fast path's keep-alive pool to one instance: a LIFO stack
// of idle connections (the most recently used is the warmest and the least
// likely to have been closed by the instance), expired after the idle
// timeout.
type upstream struct {
	addr        string // host:port
	prefix      string // the instance's base path without its trailing slash
	dialer      net.Dialer
	idleTimeout time.Duration
	maxIdle     int
	bufs        *buffers
	now         func() time.Time

	mu   sync.Mutex
	idle []*upConn
}

// upConn is one connection to an instance.
type upConn struct {
	nc       net.Conn
	cr       *connReader
	lastUsed time.Time
	reused   bool

	peekFn func(fd uintptr) bool // c.peek, bound once
	alive  bool
	one    [1]byte
}

func newUpstream(hostport, path string, cfg TransportConfig, bufs *buffers, now func() time.Time) *upstream {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "80")
	}
	return &upstream{
		addr:        hostport,
		prefix:      strings.TrimSuffix(path, "/"),
		dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		idleTimeout: cfg.IdleConnTimeout,
		maxIdle:     cfg.MaxIdleConnsPerHost,
		bufs:        bufs,
		now:         now,
	}
}

// get returns a pooled connection that still looks open, or dials one.
// Every pooled connection is peeked at first (one non-blocking system
// call): one the instance closed is not used, and neither is one on which
// the instance sent bytes nobody asked for, which would otherwise be read
// as the answer to the next request.
func (u *upstream) get(fresh bool) (*upConn, error) {
	if !fresh {
		now := u.now()
		for {
			u.mu.Lock()
			n := len(u.idle)
			if n == 0 {
				u.mu.Unlock()
				break
			}
			c := u.idle[n-1]
			u.idle[n-1] = nil
			u.idle = u.idle[:n-1]
			u.mu.Unlock()
			if now.Sub(c.lastUsed) >= u.idleTimeout || !c.open() {
				c.close()
				continue
			}
			c.reused = true
			return c, nil
		}
	}
	nc, err := u.dialer.Dial("tcp", u.addr)
	if err != nil {
		return nil, err
	}
	c := &upConn{nc: nc}
	c.cr = newConnReader(nc, u.takeBuf, u.giveBuf)
	c.peekFn = c.peek
	return c, nil
}

func (u *upstream) takeBuf() []byte  { return u.bufs.upstream.get()[:] }
func (u *upstream) giveBuf(b []byte) { u.bufs.upstream.put((*upstreamBuf)(b)) }

// put returns a connection whose exchange ended cleanly to the pool.
func (u *upstream) put(c *upConn) {
	if c.cr.buffered() != 0 { // the instance sent more than it announced
		c.close()
		return
	}
	c.cr.release()
	c.lastUsed = u.now()
	u.mu.Lock()
	if len(u.idle) >= u.maxIdle {
		u.mu.Unlock()
		c.close()
		return
	}
	u.idle = append(u.idle, c)
	u.mu.Unlock()
}

// closeIdle closes the idle connections, or only those idle for longer
// than the idle timeout when expiredOnly.
func (u *upstream) closeIdle(expiredOnly bool) {
	now := u.now()
	u.mu.Lock()
	var victims []*upConn
	keep := u.idle[:0]
	for _, c := range u.idle {
		if expiredOnly && now.Sub(c.lastUsed) < u.idleTimeout {
			keep = append(keep, c)
		} else {
			victims = append(victims, c)
		}
	}
	clear(u.idle[len(keep):])
	u.idle = keep
	u.mu.Unlock()
	for _, c := range victims {
		c.close()
	}
}

func (c *upConn) close() {
	_ = c.nc.Close()
	c.cr.release()
}

// open peeks at an idle connection without blocking: an instance that
// closed it has sent EOF (or reset it); an idle one has sent nothing.
func (c *upConn) open() bool {
	if c.cr.rc == nil {
		return true
	}
	c.alive = false
	return c.cr.rc.Read(c.peekFn) == nil && c.alive
}

// peek is open's RawConn callback, kept in the connection so a check
// allocates nothing.
func (c *upConn) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// EAGAIN: nothing to read, still open. Anything else is EOF, an error,
	// or bytes nobody asked for.
	c.alive = err == syscall.EAGAIN
	return true
}
