package supervisor

import (
	"os"
	"testing"
)

// startMemcached starts a memcached for a test and stops it at the end:
// skipped where there is none, failed under CI.
func startMemcached(t *testing.T) *Memcached {
	t.Helper()
	bin := FindMemcached()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("memcached not found")
		}
		t.Skip("memcached not found: run `make deps`")
	}
	m, err := StartMemcached(bin, MemcachedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// must turns a step that returns an error into one that fails the test.
func must(t *testing.T, step func() error) func() {
	return func() {
		t.Helper()
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMemcachedLifecycle(t *testing.T) {
	mc := startMemcached(t)
	addr := mc.Addr()
	steps := []struct {
		name   string
		do     func()
		answer bool
	}{
		{"started", func() {}, true},
		{"stopped", mc.Stop, false},
		{"stopped twice", mc.Stop, false},
		{"restarted", must(t, mc.Restart), true},
		{"restarted while running", must(t, mc.Restart), true},
		{"frozen", must(t, mc.Freeze), false},
		{"thawed", must(t, mc.Thaw), true},
		{"frozen then stopped", func() { must(t, mc.Freeze)(); mc.Stop() }, false},
		{"restarted after freeze", must(t, mc.Restart), true},
	}
	for _, st := range steps {
		st.do()
		if got := mc.Addr(); got != addr {
			t.Fatalf("%s: Addr = %s, want %s as at start", st.name, got, addr)
		}
		err := ping(addr)
		if st.answer && err != nil {
			t.Fatalf("%s: version: %v, want an answer", st.name, err)
		}
		if !st.answer && err == nil {
			t.Fatalf("%s: version answered, want no answer", st.name)
		}
	}
}

func TestMemcachedPorts(t *testing.T) {
	a, b := startMemcached(t), startMemcached(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers on one address %s", a.Addr())
	}
	for _, mc := range []*Memcached{a, b} {
		if err := ping(mc.Addr()); err != nil {
			t.Errorf("version to %s: %v", mc.Addr(), err)
		}
	}
}
