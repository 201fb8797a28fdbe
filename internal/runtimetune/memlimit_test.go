package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
)

// Mount tables of the layouts cgroupMemoryLimit meets.
const (
	// Pure cgroup v2, as in a container with a cgroup namespace or on a
	// systemd host.
	mountsV2 = `25 30 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:14 - proc proc rw
31 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// cgroup v1 inside a Docker container without a cgroup namespace: the
	// mounted root is the container's own cgroup.
	mountsV1Docker = `700 690 0:54 / / rw,relatime - overlay overlay rw,lowerdir=/x
710 700 0:57 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs ro,mode=755
715 710 0:33 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory
716 710 0:34 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,cpu,cpuacct
`
	// A hybrid host: cgroup v1 controllers and an empty v2 hierarchy.
	mountsHybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	// A mount point with a space, escaped as mountinfo does.
	mountsEscaped = `31 24 0:26 / /sys/fs/my\040cgroup rw,relatime - cgroup2 cgroup2 rw
`
)

func TestCgroupMemoryLimit(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr string
	}{
		{
			name: "v2 in a namespace",
			files: map[string]string{
				"proc/self/mountinfo":       mountsV2,
				"proc/self/cgroup":          "0::/\n",
				"sys/fs/cgroup/memory.max":  "268435456\n",
				"sys/fs/cgroup/memory.high": "100\n", // not a limit
			},
			want: 256 << 20,
		},
		{
			name: "v2 without a limit",
			files: map[string]string{
				"proc/self/mountinfo":      mountsV2,
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
			},
		},
		{
			name: "v2 root cgroup has no memory.max",
			files: map[string]string{
				"proc/self/mountinfo":                   mountsV2,
				"proc/self/cgroup":                      "0::/\n",
				"sys/fs/cgroup/cgroup.controllers":      "cpu memory\n",
				"sys/fs/cgroup/system.slice/memory.max": "1000\n", // another cgroup's
			},
		},
		{
			name: "v2 nested: the least limit of the cgroup and its ancestors",
			files: map[string]string{
				"proc/self/mountinfo":                            mountsV2,
				"proc/self/cgroup":                               "0::/kubepods/pod1/c1\n",
				"sys/fs/cgroup/kubepods/memory.max":              "8589934592\n",
				"sys/fs/cgroup/kubepods/pod1/memory.max":         "536870912\n",
				"sys/fs/cgroup/kubepods/pod1/c1/memory.max":      "max\n",
				"sys/fs/cgroup/kubepods/pod1/sibling/memory.max": "1000\n",
			},
			want: 512 << 20,
		},
		{
			name: "v1 in Docker: the mounted root is the container's cgroup",
			files: map[string]string{
				"proc/self/mountinfo":                        mountsV1Docker,
				"proc/self/cgroup":                           "12:pids:/docker/abc\n4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/system.slice/docker.service\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "104857600\n",
			},
			want: 100 << 20,
		},
		{
			name: "v1 unlimited on a hybrid host",
			files: map[string]string{
				"proc/self/mountinfo":                                         mountsHybrid,
				"proc/self/cgroup":                                            "9:name=systemd:/\n4:memory:/process_api/ed17\n1:cpu:/\n0::/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":                  "9223372036854771712\n",
				"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":      "9223372036854771712\n",
				"sys/fs/cgroup/memory/process_api/ed17/memory.limit_in_bytes": "9223372036854771712\n",
			},
		},
		{
			name: "v1 limit on a hybrid host whose v2 hierarchy has none",
			files: map[string]string{
				"proc/self/mountinfo": mountsHybrid,
				"proc/self/cgroup":    "4:memory:/process_api/ed17\n0::/\n",
				"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":      "2147483648\n",
				"sys/fs/cgroup/memory/process_api/ed17/memory.limit_in_bytes": "9223372036854771712\n",
				"sys/fs/cgroup/unified/cgroup.controllers":                    "\n",
			},
			want: 2 << 30,
		},
		{
			name: "escaped mount point",
			files: map[string]string{
				"proc/self/mountinfo":         mountsEscaped,
				"proc/self/cgroup":            "0::/\n",
				"sys/fs/my cgroup/memory.max": "4096\n",
			},
			want: 4096,
		},
		{
			name: "cgroup mount but the process is in no hierarchy of it",
			files: map[string]string{
				"proc/self/mountinfo":      mountsV2,
				"proc/self/cgroup":         "4:memory:/x\n",
				"sys/fs/cgroup/memory.max": "4096\n",
			},
		},
		{
			name:  "no /proc: not Linux",
			files: map[string]string{},
		},
		{
			name: "no cgroup mounts",
			files: map[string]string{
				"proc/self/mountinfo": "25 30 0:23 / /proc rw - proc proc rw\n",
				"proc/self/cgroup":    "0::/\n",
			},
		},
		{
			name: "malformed limit",
			files: map[string]string{
				"proc/self/mountinfo":      mountsV2,
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "lots\n",
			},
			wantErr: `cgroup memory limit /sys/fs/cgroup/memory.max: want a number of bytes or "max"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range tt.files {
				fsys[name] = &fstest.MapFile{Data: []byte(data)}
			}
			got, err := cgroupMemoryLimit(fsys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("cgroupMemoryLimit = %d, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("cgroupMemoryLimit = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestGoMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct{ cg, offHeap, want int64 }{
		{1000 * mib, 0, 900 * mib},
		{1000 * mib, 300 * mib, 600 * mib},
		{1000 * mib, 950 * mib, 100 * mib}, // the floor
	}
	for _, tt := range tests {
		if got := goMemoryLimit(tt.cg, tt.offHeap); got != tt.want {
			t.Errorf("goMemoryLimit(%d MiB, %d MiB) = %d MiB, want %d MiB", tt.cg/mib, tt.offHeap/mib, got/mib, tt.want/mib)
		}
	}
}

// TestStartMemoryLimit sets the test process's memory limit from a fake
// cgroup, and restores it.
func TestStartMemoryLimit(t *testing.T) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set in the test's environment")
	}
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	fsys := fstest.MapFS{
		"proc/self/mountinfo":      {Data: []byte(mountsV2)},
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("1073741824\n")},
	}
	var logs bytes.Buffer
	stop := startMemoryLimit(context.Background(), fsys, slog.New(slog.NewTextHandler(&logs, nil)))
	got := debug.SetMemoryLimit(-1)
	stop()
	if max := int64(1<<30) / 100 * memoryLimitShare; got > max || got < max/2 {
		t.Errorf("memory limit = %d, want about %d", got, max)
	}
	if !strings.Contains(logs.String(), `msg="memory limit from the cgroup" cgroup_memory_limit=1073741824`) {
		t.Errorf("log = %q, want the memory limit line", logs.String())
	}

	// No limit: nothing changes.
	debug.SetMemoryLimit(before)
	logs.Reset()
	stop = startMemoryLimit(context.Background(), fstest.MapFS{}, slog.New(slog.NewTextHandler(&logs, nil)))
	stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("without a cgroup limit: memory limit = %d, want it unchanged at %d", got, before)
	}
	if logs.Len() != 0 {
		t.Errorf("without a cgroup limit: logged %q at info level, want nothing", logs.String())
	}
}
