package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/internal/periodic"
	"github.com/floodgate-rl/floodgate/limiter"
)

// Go's memory limit from the container's, as automemlimit does for
// Kubernetes: without a limit the garbage collector lets the heap grow to
// twice what is live (GOGC=100), which in a container means an OOM kill long
// before memory is really short.
const (
	// memoryLimitShare is the part of the cgroup's memory limit, in
	// percent, that floodgate's process may use; the rest is headroom for
	// what the Go runtime does not see (the kernel's page cache and socket
	// buffers charged to the cgroup).
	memoryLimitShare = 90

	// memoryLimitFloor is the smallest Go memory limit floodgate sets, in
	// percent of the cgroup's limit, however much the in-memory store holds
	// outside the Go heap.
	memoryLimitFloor = 10

	// memoryLimitEvery is how often the Go memory limit is recomputed as the
	// in-memory store's off-heap tables grow and shrink.
	memoryLimitEvery = 5 * time.Second

	// cgroupUnlimited is the least value of cgroup v1's
	// memory.limit_in_bytes that means no limit (v1 writes the largest
	// page count times the page size, just under 2^63).
	cgroupUnlimited = 1 << 62
)

// startMemoryLimit sets Go's soft memory limit from the memory limit of the
// cgroup floodgate runs in, unless the GOMEMLIMIT environment variable is set
// (then the runtime has applied it, and "off" turns the limit off): to
// memoryLimitShare percent of the cgroup's limit, minus the bytes the
// in-memory store holds outside the Go heap (limiter.OffHeapBytes), which
// the Go limit does not count. A goroutine recomputes the limit every few
// seconds until ctx is done; the returned function stops it and waits for it.
// root is the filesystem in which /proc/self and /sys/fs/cgroup are read. The
// outcome is logged once.
func startMemoryLimit(ctx context.Context, root fs.FS, log *slog.Logger) (stop func()) {
	nothing := func() {}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("memory limit from GOMEMLIMIT", "gomemlimit", v)
		return nothing
	}
	cg, err := cgroupMemoryLimit(root)
	switch {
	case err != nil:
		log.Warn("cannot read the cgroup memory limit; Go's memory limit stays unset", "err", err)
		return nothing
	case cg == 0:
		log.Debug("no cgroup memory limit; Go's memory limit stays unset")
		return nothing
	}
	set := goMemoryLimit(cg, limiter.OffHeapBytes())
	debug.SetMemoryLimit(set)
	log.Info("memory limit from the cgroup", "cgroup_memory_limit", cg, "go_memory_limit", set, "share_percent", memoryLimitShare)

	return periodic.Start(ctx, memoryLimitEvery, func() {
		// Only a change of a MiB or more is worth the runtime's
		// recomputing its pacing.
		if next := goMemoryLimit(cg, limiter.OffHeapBytes()); next > set+1<<20 || next < set-1<<20 {
			set = next
			debug.SetMemoryLimit(set)
		}
	})
}

// goMemoryLimit returns the Go memory limit for a cgroup memory limit of cg
// bytes of which offHeap are used outside the Go heap: memoryLimitShare
// percent of cg less offHeap, and at least memoryLimitFloor percent of cg.
func goMemoryLimit(cg, offHeap int64) int64 {
	return max(cg/100*memoryLimitShare-offHeap, cg/100*memoryLimitFloor)
}

// cgroupMemoryLimit returns the memory limit, in bytes, that applies to this
// process's cgroup (the least of its own and its ancestors' limits under the
// mounted hierarchy), or 0 when there is none or no cgroup filesystem is
// mounted. It reads cgroup v2's memory.max and cgroup v1's
// memory.limit_in_bytes, and takes the lesser when a hybrid system has both.
// root is the filesystem in which proc/self/mountinfo, proc/self/cgroup and
// the cgroup mounts are read ("/" in production).
func cgroupMemoryLimit(root fs.FS) (int64, error) {
	mounts, err := cgroupMounts(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // not Linux, or no /proc
	}
	if err != nil {
		return 0, err
	}
	groups, err := procCgroups(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var limit int64
	for _, m := range mounts {
		cgPath, ok := groups[m.hierarchy]
		if !ok {
			continue
		}
		l, err := hierarchyLimit(root, m, cgPath)
		if err != nil {
			return 0, err
		}
		if l > 0 && (limit == 0 || l < limit) {
			limit = l
		}
	}
	return limit, nil
}

// cgroupMount is a mounted cgroup hierarchy that can limit memory.
type cgroupMount struct {
	hierarchy string // "v2", or "memory" for cgroup v1's memory controller
	root      string // the hierarchy's path that is mounted, e.g. "/" or "/docker/abc"
	point     string // where it is mounted, e.g. "/sys/fs/cgroup"
}

// cgroupMounts returns the cgroup v2 mounts and cgroup v1 memory controller
// mounts listed in proc/self/mountinfo.
func cgroupMounts(root fs.FS) ([]cgroupMount, error) {
	const name = "proc/self/mountinfo"
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read cgroup mounts: %w", err)
	}
	defer f.Close()
	var mounts []cgroupMount
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := cgroupMount{root: unescapeMount(f[3]), point: unescapeMount(f[4])}
		switch {
		case g[0] == "cgroup2":
			m.hierarchy = "v2"
		case g[0] == "cgroup" && hasOption(g[2], "memory"):
			m.hierarchy = "memory"
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read cgroup mounts from %s: %w", name, err)
	}
	return mounts, nil
}

// procCgroups returns this process's cgroup paths from proc/self/cgroup,
// keyed "v2" for the unified hierarchy and "memory" for cgroup v1's memory
// controller.
func procCgroups(root fs.FS) (map[string]string, error) {
	const name = "proc/self/cgroup"
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return nil, fmt.Errorf("read this process's cgroups: %w", err)
	}
	groups := map[string]string{}
	for line := range strings.Lines(string(b)) {
		// 0::/kubepods/pod1/c1   or   4:memory:/docker/abc
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			groups["v2"] = parts[2]
		case hasOption(parts[1], "memory"):
			groups["memory"] = parts[2]
		}
	}
	return groups, nil
}

// hierarchyLimit returns the least memory limit set on cgPath and its
// ancestors within mount m, or 0 when none is set.
func hierarchyLimit(root fs.FS, m cgroupMount, cgPath string) (int64, error) {
	file := "memory.max"
	if m.hierarchy == "memory" {
		file = "memory.limit_in_bytes"
	}
	// The part of cgPath below the mounted root. Inside a container
	// without a cgroup namespace the mount's root is the container's
	// cgroup; when cgPath is not below it, the mount is the whole
	// hierarchy as seen from here.
	rel := cgPath
	if m.root != "/" {
		if r, ok := strings.CutPrefix(cgPath, m.root); ok && (r == "" || r[0] == '/') {
			rel = r
		} else {
			rel = "/"
		}
	}
	var limit int64
	for dir := path.Clean("/" + rel); ; dir = path.Dir(dir) {
		name := strings.TrimPrefix(path.Join(m.point, dir, file), "/")
		b, err := fs.ReadFile(root, name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// The root cgroup has no limit file, and a cgroup path
			// from outside a namespace may not exist here.
		case err != nil:
			return 0, fmt.Errorf("read cgroup memory limit: %w", err)
		default:
			l, err := parseCgroupLimit(string(b))
			if err != nil {
				return 0, fmt.Errorf("cgroup memory limit /%s: %w", name, err)
			}
			if l > 0 && (limit == 0 || l < limit) {
				limit = l
			}
		}
		if dir == "/" {
			return limit, nil
		}
	}
}

// parseCgroupLimit parses the content of memory.max or
// memory.limit_in_bytes: a number of bytes, or "max" (v2) or a number of at
// least cgroupUnlimited (v1) for none, which it returns as 0.
func parseCgroupLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a number of bytes or \"max\": %w", err)
	}
	if n >= cgroupUnlimited {
		return 0, nil
	}
	return int64(n), nil
}

// hasOption reports whether the comma-separated list opts holds opt.
func hasOption(opts, opt string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space) in a
// path.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
