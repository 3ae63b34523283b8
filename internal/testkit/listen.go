package testkit

import (
	"net"
	"sync"
	"testing"
)

// Listener is a loopback listener whose accept loop a test started with
// Listen.
type Listener struct {
	net.Listener
	done chan struct{}
	once sync.Once
}

// Listen listens on a free loopback port and hands each connection it
// accepts to serve, in the accepting goroutine: serve starts a goroutine
// of its own for work that blocks, and owns the connection. The listener
// is closed, and its loop waited for, by Close or at the test's end.
func Listen(t testing.TB, serve func(net.Conn)) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Listener{Listener: ln, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// Close closes the listener and waits until its accept loop, and so the
// serve call in progress, has returned; it may be called more than once.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() { err = l.Listener.Close() })
	<-l.done
	return err
}
