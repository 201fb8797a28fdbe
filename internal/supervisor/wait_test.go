package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	errNotYet := errors.New("not yet")
	errGone := errors.New("gone")
	tests := []struct {
		name    string
		okAfter int   // calls until cond holds; 0: never
		fail    error // returned as permanent on the second call
		want    error // nil, or an error that errors.Is matches
		calls   int   // calls Poll must have made; 0: at least 2
	}{
		{name: "holds at once", okAfter: 1, calls: 1},
		{name: "holds on the third call", okAfter: 3, calls: 3},
		{name: "permanent error ends it", fail: errGone, want: errGone, calls: 2},
		{name: "never holds", want: errNotYet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := Poll(50*time.Millisecond, func() error {
				calls++
				switch {
				case tt.okAfter > 0 && calls >= tt.okAfter:
					return nil
				case tt.fail != nil && calls == 2:
					return Permanent(tt.fail)
				}
				return errNotYet
			})
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Poll = %v, want %v", err, tt.want)
			}
			if tt.fail != nil && err != tt.fail {
				t.Errorf("Poll = %#v, want the permanent error unwrapped", err)
			}
			if tt.want == errNotYet && !strings.Contains(err.Error(), "not within 50ms") {
				t.Errorf("Poll = %v, want it to say how long it waited", err)
			}
			if tt.calls > 0 && calls != tt.calls || tt.calls == 0 && calls < 2 {
				t.Errorf("cond called %d times, want %d (0: at least 2)", calls, tt.calls)
			}
		})
	}
}

func TestRetryBind(t *testing.T) {
	tests := []struct {
		name  string
		taken int // attempts whose port was taken
		other bool
		want  int // attempts made
		ok    bool
	}{
		{name: "first attempt", want: 1, ok: true},
		{name: "port taken twice", taken: 2, want: 3, ok: true},
		{name: "port always taken", taken: BindAttempts, want: BindAttempts},
		{name: "another failure is not retried", other: true, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attempts := 0
			v, err := RetryBind(func() (int, *Process, error) {
				attempts++
				switch {
				case attempts <= tt.taken:
					return 0, exited(t, "bind: Address already in use"), errors.New("not ready")
				case tt.other:
					return 0, exited(t, "bad flag"), errors.New("not ready")
				}
				return attempts, nil, nil
			})
			if attempts != tt.want || (err == nil) != tt.ok || tt.ok && v != attempts {
				t.Errorf("RetryBind = %d, %v after %d attempts; want %d attempts, ok %v", v, err, attempts, tt.want, tt.ok)
			}
		})
	}
}

// exited returns a process that printed out and exited.
func exited(t *testing.T, out string) *Process {
	t.Helper()
	p, err := Start("sh", nil, "/bin/sh", "-c", "echo '"+out+"'")
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), out) {
		t.Fatalf("ExitErr = %v, want the output %q", err, out)
	}
	return p
}

func TestServerEnv(t *testing.T) {
	t.Setenv("FLOODGATE_LIMIT", "1")
	t.Setenv("GOMAXPROCS", "1")
	t.Setenv("SUPERVISOR_TEST_KEPT", "yes")
	env := strings.Join(ServerEnv("GOMAXPROCS="), "\n")
	if strings.Contains(env, "FLOODGATE_LIMIT") || strings.Contains(env, "GOMAXPROCS") {
		t.Errorf("ServerEnv kept FLOODGATE_* or GOMAXPROCS:\n%s", env)
	}
	if !strings.Contains(env, "SUPERVISOR_TEST_KEPT=yes") {
		t.Errorf("ServerEnv dropped an unrelated variable")
	}
}

func TestOutputBound(t *testing.T) {
	var b lockedBuffer
	chunk := strings.Repeat("x", 1000) + "\n"
	for range 3 * keptOutput / len(chunk) {
		b.Write([]byte(chunk))
	}
	b.Write([]byte("last line\n"))
	s := b.String()
	if len(s) > keptOutput || len(s) < keptOutput/2 || !strings.HasSuffix(s, "last line\n") {
		t.Errorf("kept %d bytes ending %q; want at most %d, the newest", len(s), s[len(s)-20:], keptOutput)
	}
}
