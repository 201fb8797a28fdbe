package loadgen

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill cmd's process when the benchmark
// dies, so an interrupted run leaves no server running.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
