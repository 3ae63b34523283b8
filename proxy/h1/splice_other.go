//go:build !linux

package h1

import "net"

// splicer is splice(2) between two sockets, which only Linux has: bodies
// are copied elsewhere.
type splicer struct {
	inPipe int
	waits  *connReader
}

func newSplicer(src, dst net.Conn) *splicer { return nil }

func (sp *splicer) close()                 {}
func (sp *splicer) drain(int) (int, error) { panic("h1: no splice on this system") }
func (sp *splicer) pump() (int, error)     { panic("h1: no splice on this system") }
