package h1

import (
	"bytes"
	"sync/atomic"
	"time"
)

// IdleLimit is how long one instance lets a keep-alive connection sit
// idle, as far as the proxy can tell. An instance closes idle connections
// after its own timeout (Node.js: 5 s); a pooled connection taken at about
// that age can be written to while the instance's close is on its way,
// and a request with a body then fails (it cannot be sent again). The
// look at a pooled connection catches the closes that have arrived; this
// keeps the pool from reaching that age at all. It learns the timeout
// from the Keep-Alive field of the instance's answers (timeout=N, as
// Node.js and Apache send it) and from the connections the instance was
// seen to have closed while idle (the shortest such idle time, of at
// least MinLearnedIdle: a restart closes connections of any age), and
// pooled connections are used only while idle for less than nine tenths
// of the announced timeout, or three quarters of the shortest close seen
// (which overstates the timeout by up to the gap between two requests).
// The zero value knows nothing, and a nil one learns nothing; safe for
// concurrent use.
type IdleLimit struct {
	hint atomic.Int64 // ns: the Keep-Alive field's timeout; 0: none
	seen atomic.Int64 // ns: shortest idle time the instance closed at; 0: none
}

// MinLearnedIdle is the shortest idle time IdleLimit takes as an
// instance's timeout when it finds a connection closed.
const MinLearnedIdle = time.Second

// Limit returns how long a pooled connection may have been idle to be
// used: base (the configured idle timeout), or less when the instance is
// known to close idle connections sooner.
func (l *IdleLimit) Limit(base time.Duration) time.Duration {
	if v := time.Duration(l.hint.Load()); v > 0 {
		base = min(base, v/10*9)
	}
	if v := time.Duration(l.seen.Load()); v > 0 {
		base = min(base, v/4*3)
	}
	return base
}

// Forget drops what was learned: the instance may be a new process.
func (l *IdleLimit) Forget() {
	l.hint.Store(0)
	l.seen.Store(0)
}

// ClosedAfter notes that the instance closed a connection idle for age.
func (l *IdleLimit) ClosedAfter(age time.Duration) {
	if l == nil || age < MinLearnedIdle {
		return
	}
	for {
		old := l.seen.Load()
		if old != 0 && old <= int64(age) || l.seen.CompareAndSwap(old, int64(age)) {
			return
		}
	}
}

// KeepAlive notes the value of a Keep-Alive field of the instance's
// answer ("timeout=5, max=100"; RFC 2068 19.7.1.1).
func (l *IdleLimit) KeepAlive(v []byte) {
	for l != nil && len(v) > 0 {
		var p []byte
		p, v, _ = bytes.Cut(v, []byte(","))
		p = bytes.TrimSpace(p)
		if len(p) < 8 || !equalFold(p[:8], "timeout=") {
			continue
		}
		if n, ok := parseDecimal(p[8:]); ok && n > 0 && n < 1<<20 {
			if d := int64(time.Duration(n) * time.Second); l.hint.Load() != d {
				l.hint.Store(d)
			}
		}
		return
	}
}
