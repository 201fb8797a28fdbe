package testutil

import "testing"

func TestMemcachedLifecycle(t *testing.T) {
	mc := StartMemcached(t)
	addr := mc.Addr()
	steps := []struct {
		name   string
		do     func()
		answer bool
	}{
		{"started", func() {}, true},
		{"stopped", mc.Stop, false},
		{"stopped twice", mc.Stop, false},
		{"restarted", mc.Restart, true},
		{"restarted while running", mc.Restart, true},
		{"frozen", mc.Freeze, false},
		{"thawed", mc.Thaw, true},
		{"frozen then stopped", func() { mc.Freeze(); mc.Stop() }, false},
		{"restarted after freeze", mc.Restart, true},
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
	a, b := StartMemcached(t), StartMemcached(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers on one address %s", a.Addr())
	}
	for _, mc := range []*Memcached{a, b} {
		if err := ping(mc.Addr()); err != nil {
			t.Errorf("version to %s: %v", mc.Addr(), err)
		}
	}
}
