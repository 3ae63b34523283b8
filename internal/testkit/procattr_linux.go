package testkit

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill cmd's process when the test process
// dies before its cleanup runs, for example on a test timeout.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
