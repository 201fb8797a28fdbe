package supervisor

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill cmd's process when its parent dies,
// so a test killed by -timeout or Ctrl-C, or an interrupted benchmark,
// leaves no server running.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
