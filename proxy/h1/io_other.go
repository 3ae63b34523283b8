//go:build !unix

package h1

import "syscall"

// initRaw leaves the connection without raw access: waits hold their
// buffer, and peeks report nothing known.
func (cr *connReader) initRaw() {}

func (cr *connReader) readReady(uintptr) bool { return true }

func (cr *connReader) peek(uintptr) bool {
	cr.peeked = peekUnknown
	return true
}

func peekConn(syscall.RawConn) peekResult { return peekUnknown }

// serveWaiting is never called: a connection without raw access waits
// with waitData.
func (c *Conn) serveWaiting(uintptr) bool { return true }

// cut closes c's connection (see wait_unix.go).
func (c *Conn) cut() { _ = c.nc.Close() }
