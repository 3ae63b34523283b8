//go:build linux

package h1

import (
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryoprotect/bluegreen/internal/localfault"
)

// Parking (Linux): a keep-alive connection that waited ParkAfter for its
// next request gives up its goroutine. Its socket goes into an epoll set
// owned by the Server's parker goroutine; when bytes or a hang-up arrive,
// the parker starts a goroutine that resumes the connection's loop. A
// parked connection costs its Conn and one slot here, and no goroutine
// stack.
//
// A *net.TCPConn also leaves Go's poller while parked (detached): the
// parker keeps a duplicate of its descriptor and closes the net.Conn,
// which gives the runtime's poll descriptor (about 0.5 KiB outside the
// heap, never returned to the system, reused by the next connection)
// back; the Conn stays as the record Shutdown and Close find. Bytes or a
// hang-up make a new net.Conn of the descriptor and a new Conn of it, as
// Serve makes one of an accepted connection (reattach). That costs about
// fifteen system calls per resume, paid once per quiet spell of a
// connection (bench/results/2026-12-02-idle-round3.md).
//
// Ownership of a parked connection goes with Conn.state: whoever moves it
// out of stateParked (the parker to resume it, a close to end it) undoes
// the registration. Events carry a slot and its generation, never the fd,
// so an event that arrives after its connection left cannot be taken for
// another connection that got the same fd or slot.

// wakeSlot marks the event of the parker's eventfd.
const wakeSlot = -1

type parker struct {
	s      *Server
	mu     sync.Mutex
	epfd   int // -1 once the parker stopped
	wakefd int
	// spare is a descriptor held in reserve (a duplicate of wakefd), or -1:
	// a parked connection is resumed through a new descriptor, and a
	// process at its descriptor limit would otherwise lose the connection
	// with the request on it. It is given up for that and taken again at
	// once (reattach).
	spare  int
	slots  []parkSlot
	free   []uint32
	parked int
	rel    releaser // when to return the memory parking freed
}

type parkSlot struct {
	c     *Conn
	gen   uint32
	fd    int32 // the detached socket's descriptor, or -1: the Conn's net.Conn is watched
	since int64 // unix nanoseconds: when the connection's idle wait began
	until int64 // unix nanoseconds: when the sweep closes it (Server.waitLimit after since)
}

// newParker creates the epoll set and the eventfd that ends the parker's
// wait; nil when the system refuses either.
func newParker(s *Server) (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot, Pad: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	rel := releaser{
		minParked: releaseParked,
		quiet:     int64(releaseQuiet),
		every:     int64(releaseEvery),
		share:     releaseShare,
		release:   debug.FreeOSMemory,
	}
	p := &parker{s: s, epfd: epfd, wakefd: wakefd, spare: -1, rel: rel}
	p.refillSpare()
	return p, nil
}

// park registers c, idle since since, to be closed at until, and with
// nothing buffered, and reports whether it is parked: then c belongs to
// the parker and the calling goroutine must end without touching it.
// False leaves c to the caller, idle (or closed by a shutdown meanwhile).
func (p *parker) park(c *Conn, since, until time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 || p.s.shutdown.Load() {
		return false
	}
	var i uint32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		i = uint32(len(p.slots))
		p.slots = append(p.slots, parkSlot{})
	}
	sl := &p.slots[i]
	sl.c, sl.since, sl.until, sl.fd = c, since.UnixNano(), until.UnixNano(), -1
	c.parkSlot = i
	p.parked++
	if !c.state.CompareAndSwap(stateIdle, stateParked) {
		p.removeLocked(c, false) // a shutdown closed it
		return false
	}
	if p.s.beforePark != nil {
		p.s.beforePark(c)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(i), Pad: int32(sl.gen)}
	tc, detach := c.nc.(*net.TCPConn)
	var err error
	cerr := c.cr.rc.Control(func(fd uintptr) {
		watch := int(fd)
		if detach {
			if watch, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err != nil {
				return
			}
		}
		if err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, watch, &ev); err != nil {
			if detach {
				unix.Close(watch)
			}
			return
		}
		if detach {
			sl.fd = int32(watch)
		}
	})
	if cerr == nil && err == nil {
		if detach {
			tc.Close() // the socket stays open through sl.fd
		}
		p.rel.active(time.Now().UnixNano(), true)
		return true
	}
	// Not registered: the caller keeps it, unless a close took it.
	if c.state.CompareAndSwap(stateParked, stateIdle) {
		p.removeLocked(c, false)
		return false
	}
	return true
}

// removeLocked frees c's slot and takes its socket out of the epoll set;
// it returns the descriptor of a detached socket (-1: none), which the
// caller now owns.
func (p *parker) removeLocked(c *Conn, registered bool) int {
	sl := &p.slots[c.parkSlot]
	if sl.c != c {
		return -1
	}
	fd := int(sl.fd)
	sl.c, sl.fd = nil, -1
	sl.gen++
	p.free = append(p.free, c.parkSlot)
	p.parked--
	if registered && p.epfd >= 0 {
		if fd >= 0 {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		} else {
			_ = c.cr.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
		}
	}
	return fd
}

// drop undoes the parking of c, which the caller moved from stateParked to
// stateClosed; the caller closes it (a detached socket is closed here).
func (p *parker) drop(c *Conn) {
	p.mu.Lock()
	fd := p.removeLocked(c, true)
	p.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// count is how many connections are parked.
func (p *parker) count() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parked
}

// stop makes the parker end: it closes what is still parked and its
// descriptors. Parking fails from now on.
func (p *parker) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd >= 0 {
		one := [8]byte{1}
		_, _ = unix.Write(p.wakefd, one[:])
	}
}

// run waits for the parked connections' events, resumes each connection
// that has one, closes those whose wait has run out (waitLimit), and
// returns freed memory to the system after a wave of parking (releaser),
// until stop.
func (p *parker) run() {
	s := p.s
	every := max(min(s.IdleTimeout/8, time.Second), 10*time.Millisecond)
	events := make([]unix.EpollEvent, 128)
	next := time.Now().Add(every)
	for {
		wake := next
		if at := p.releaseDue(); at != 0 {
			wake = time.Unix(0, min(at, next.UnixNano()))
		}
		wait := max(time.Until(wake), 0)
		n, err := unix.EpollWait(p.epfd, events, int((wait+time.Millisecond-1)/time.Millisecond))
		if err != nil && err != unix.EINTR {
			s.Log.Error("parking idle connections stopped", "err", err)
			p.end()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == wakeSlot {
				p.end()
				return
			}
			p.resume(uint32(ev.Fd), uint32(ev.Pad))
		}
		if now := time.Now(); !now.Before(next) {
			p.sweep(now)
			next = now.Add(every)
		}
	}
}

// releaseDue returns freed memory to the system if the releaser says it
// is due and most of the server's connections are parked (others are busy
// with requests: the process is not quiet, look again later), and
// otherwise tells when it will be (0: not pending). The release runs in
// the parker's goroutine, without its lock: a connection that wakes
// meanwhile waits for it (a few milliseconds, see
// bench/results/2026-12-02-idle-round3.md).
func (p *parker) releaseDue() int64 {
	p.mu.Lock()
	ok, at := p.rel.due(time.Now().UnixNano())
	p.mu.Unlock()
	if !ok {
		return at
	}
	p.s.mu.Lock()
	conns := len(p.s.conns)
	p.s.mu.Unlock()
	p.mu.Lock()
	now := time.Now().UnixNano()
	if ok, at = p.rel.due(now); !ok || 4*p.parked < 3*conns {
		if ok {
			p.rel.active(now, false) // connections at work: not quiet
			_, at = p.rel.due(now)
		}
		p.mu.Unlock()
		return at
	}
	parked, release := p.parked, p.rel.release
	p.rel.start(now)
	p.mu.Unlock()
	release()
	end := time.Now().UnixNano()
	p.mu.Lock()
	p.rel.finish(now, end)
	p.mu.Unlock()
	p.s.Log.Debug("returned free memory to the system after parking", "parked", parked, "connections", conns, "took", time.Duration(end-now))
	return 0
}

// resume starts a goroutine for the connection of a slot whose socket has
// bytes or hung up; stale events (the connection left the slot) are
// dropped.
func (p *parker) resume(i, gen uint32) {
	p.mu.Lock()
	if int(i) >= len(p.slots) || p.slots[i].gen != gen || p.slots[i].c == nil {
		p.mu.Unlock()
		return
	}
	c := p.slots[i].c
	if !c.state.CompareAndSwap(stateParked, stateActive) {
		p.mu.Unlock() // a close took it and undoes the parking
		return
	}
	now := time.Now().UnixNano()
	lastWait := time.Duration(now - p.slots[i].since) // the next grace follows it
	p.rel.active(now, false)
	fd := p.removeLocked(c, true)
	p.mu.Unlock()
	if fd >= 0 {
		go p.reattach(c, fd, lastWait)
		return
	}
	c.lastWait = lastWait
	go p.s.serveConn(c)
}

// reattach serves a detached connection again: a net.Conn of its socket
// (fd, which it takes) and a Conn of that, made and tracked as Serve does
// for an accepted connection, replace old, whose net.Conn was closed when
// it parked.
func (p *parker) reattach(old *Conn, fd int, lastWait time.Duration) {
	s := p.s
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // a duplicate, in Go's poller
	if kind, _ := localfault.Of(err); kind == localfault.FDs && p.takeSpare() {
		// At the descriptor limit: the spare makes room for the duplicate,
		// and is taken again once the original is closed, so that the
		// request finds the process as full as it was and is answered as
		// any other (503, the proxy's own fault, when it needs an
		// instance connection it cannot open).
		nc, err = net.FileConn(f)
	}
	f.Close()
	p.refillSpare()
	if err == nil && nc.RemoteAddr() == nil {
		nc.Close() // the client reset it: nothing left to read or answer
		err = unix.ENOTCONN
	}
	if err != nil {
		if err != unix.ENOTCONN {
			s.Log.Warn("a parked connection could not be resumed", "remote", old.remote, "err", err)
		}
		old.state.Store(stateClosed)
		s.forget(old)
		return
	}
	c := s.newConn(nc)
	c.fresh = false // resumed: what woke it is a request's, or the end
	c.parkable = c.cr.rc != nil
	c.lastWait = lastWait
	tracked := s.track(c) // closes nc when the server is shutting down
	old.state.Store(stateClosed)
	s.forget(old)
	if tracked {
		s.serveConn(c)
	}
}

// takeSpare closes the spare descriptor, if there is one, so that the
// caller can open another; true when it did.
func (p *parker) takeSpare() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spare < 0 {
		return false
	}
	unix.Close(p.spare)
	p.spare = -1
	return true
}

// refillSpare takes a spare descriptor again when there is none (and the
// parker runs); it fails quietly while the process is at its limit.
func (p *parker) refillSpare() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spare >= 0 || p.wakefd < 0 {
		return
	}
	if fd, err := unix.FcntlInt(uintptr(p.wakefd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
		p.spare = fd
	}
}

// sweep closes the parked connections whose wait has run out.
func (p *parker) sweep(now time.Time) {
	p.refillSpare() // one a resume gave up while the process was full
	limit := now.UnixNano()
	var expired []*Conn
	p.mu.Lock()
	for i := range p.slots {
		if sl := &p.slots[i]; sl.c != nil && sl.until <= limit {
			expired = append(expired, sl.c)
		}
	}
	p.mu.Unlock()
	for _, c := range expired {
		p.s.closeParked(c, true)
	}
}

// end closes every connection still parked and the parker's descriptors.
func (p *parker) end() {
	p.mu.Lock()
	var left []*Conn
	for i := range p.slots {
		if c := p.slots[i].c; c != nil {
			left = append(left, c)
		}
	}
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
	if p.spare >= 0 {
		unix.Close(p.spare)
	}
	p.epfd, p.wakefd, p.spare = -1, -1, -1
	p.mu.Unlock()
	for _, c := range left {
		p.s.closeParked(c, true)
	}
}
