package policy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/policy"
)

// events records what a Watcher reports.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) loaded(p *policy.Policy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := make([]string, len(p.Rules))
	for i, r := range p.Rules {
		names[i] = r.Name
	}
	e.list = append(e.list, "load "+strings.Join(names, ","))
}

func (e *events) failed(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, "error "+err.Error())
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.list
	e.list = nil
	return l
}

func rulesNamed(names ...string) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "- name: %s\n  limit: 5\n  window: 1m\n", n)
	}
	return b.String()
}

func TestWatcherPoll(t *testing.T) {
	t.Parallel()
	cm := testutil.NewConfigMap(t, "policy.yaml", rulesNamed("a"))
	current, err := policy.Load(cm.Path())
	if err != nil {
		t.Fatal(err)
	}
	var ev events
	w := policy.NewWatcher(cm.Path(), current, ev.loaded, ev.failed)

	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"unchanged", func() {}, nil},
		{"same content in a new version", func() { cm.Update(rulesNamed("a")) }, nil},
		{"valid change", func() { cm.Update(rulesNamed("a", "b")) }, []string{"load a,b"}},
		{"invalid change", func() { cm.Update(rulesNamed("a", "b") + "  limt: 1\n") },
			[]string{`error line 8: rules[1]: unknown field "limt" (want name, match, key, strategy, limit, window, burst, tiers, scope, shadow)`}},
		{"still invalid: reported once", func() {}, nil},
		{"another invalid version", func() { cm.Update("rules: [\n") }, []string{"error line 2: invalid YAML: did not find expected node content"}},
		{"fixed", func() { cm.Update(rulesNamed("c")) }, []string{"load c"}},
		{"file removed", func() {
			if err := os.Remove(cm.Path()); err != nil {
				t.Fatal(err)
			}
		}, []string{"error no such file or directory"}},
		{"still removed: reported once", func() {}, nil},
		{"back, as it was", func() {
			if err := os.Symlink(filepath.Join("..data", "policy.yaml"), cm.Path()); err != nil {
				t.Fatal(err)
			}
		}, []string{"load c"}},
		{"written in place", func() {
			if err := os.WriteFile(cm.Path(), []byte(rulesNamed("d")), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"load d"}},
	}
	for _, st := range steps {
		st.change()
		changed := w.Poll()
		got := ev.take()
		if strings.Join(got, "\n") != strings.Join(st.want, "\n") {
			t.Errorf("%s: reported %q, want %q", st.name, got, st.want)
		}
		if changed != (len(st.want) > 0) {
			t.Errorf("%s: Poll() = %v", st.name, changed)
		}
	}
}

func TestWatcherRun(t *testing.T) {
	t.Parallel()
	cm := testutil.NewConfigMap(t, "policy.yaml", rulesNamed("a"))
	var ev events
	loaded := make(chan struct{}, 10)
	w := policy.NewWatcher(cm.Path(), nil, func(p *policy.Policy) { ev.loaded(p); loaded <- struct{}{} }, ev.failed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, 5*time.Millisecond)
	}()
	// Without a current policy, the first poll loads the file.
	waitFor(t, loaded)
	cm.Update(rulesNamed("b"))
	waitFor(t, loaded)
	cancel()
	<-done
	if got := ev.take(); strings.Join(got, ";") != "load a;load b" {
		t.Errorf("reported %q", got)
	}
}

func waitFor(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload within 10s")
	}
}
