//go:build !linux

package testutil

import "os/exec"

// setParentDeath does nothing where the kernel cannot kill a child with its
// parent; the test's cleanup still kills every process it started.
func setParentDeath(cmd *exec.Cmd) {}
