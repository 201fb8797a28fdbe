//go:build !linux

package supervisor

import "os/exec"

// setParentDeath does nothing where the kernel cannot kill a child with its
// parent; Stop still kills every process started.
func setParentDeath(cmd *exec.Cmd) {}
