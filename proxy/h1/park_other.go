//go:build !linux

package h1

import (
	"errors"
	"time"
)

// parker is Linux only (park_linux.go): elsewhere an idle connection waits
// in its goroutine until its IdleTimeout.
type parker struct{}

func newParker(*Server) (*parker, error) { return nil, errors.ErrUnsupported }

func (p *parker) park(*Conn, time.Time, time.Time) bool { return false }
func (p *parker) drop(*Conn)                            {}
func (p *parker) count() int                            { return 0 }
func (p *parker) stop()                                 {}
func (p *parker) run()                                  {}
