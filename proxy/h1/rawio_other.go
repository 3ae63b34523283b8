//go:build !unix

package h1

// Without raw access (cr.rc is nil) read and write go through net.Conn and
// the callbacks are never called.

func (cr *connReader) readSome(uintptr) bool  { return true }
func (cr *connReader) writeSome(uintptr) bool { return true }
func (cr *connReader) sendSome(uintptr) bool  { return true }
