//go:build !linux

package testkit

import "os/exec"

// setPdeathsig does nothing where the kernel offers no parent-death signal;
// test cleanup still stops every process.
func setPdeathsig(*exec.Cmd) {}
