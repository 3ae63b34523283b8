// Package loglimit holds back log lines that a failure repeated at every
// request would write, keeping a count of them.
package loglimit

import (
	"sync"
	"time"
)

// Limit lets one log line through per interval and counts the ones it
// holds back, so that a failure every request meets (the proxy out of
// descriptors under load) writes a line a second with the count of the
// others, instead of a line per request that costs the disk and CPU the
// proxy is short of.
type Limit struct {
	Every time.Duration
	Now   func() time.Time

	mu   sync.Mutex
	next time.Time // no line before
	held int       // lines held back since the last one
}

// Allow reports whether a line may be written now and, when it may, how
// many were held back since the last one written.
func (l *Limit) Allow() (ok bool, held int) {
	now := l.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.held++
		return false, 0
	}
	held, l.held = l.held, 0
	l.next = now.Add(l.Every)
	return true, held
}
