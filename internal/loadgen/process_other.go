//go:build !linux

package loadgen

import "os/exec"

// setParentDeath does nothing where the kernel cannot kill a child with its
// parent; the benchmark still stops every process it started.
func setParentDeath(cmd *exec.Cmd) {}
