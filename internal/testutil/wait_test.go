package testutil

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB that records Fatalf instead of ending the
// test, so that WaitFor's failure can be checked.
type fatalRecorder struct {
	testing.TB
	failed string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	tests := []struct {
		name     string
		holdsAt  int // call on which cond holds; 0: never
		wantFail string
	}{
		{name: "holds at once", holdsAt: 1},
		{name: "holds on the fifth call", holdsAt: 5},
		{name: "never holds", wantFail: "not within 20ms: 3 of 4 ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fatalRecorder{TB: t}
			calls := 0
			WaitFor(r, 20*time.Millisecond, func() error {
				calls++
				if tt.holdsAt > 0 && calls >= tt.holdsAt {
					return nil
				}
				return errors.New("3 of 4 ready")
			})
			if tt.wantFail == "" && r.failed != "" || tt.wantFail != "" && !strings.Contains(r.failed, tt.wantFail) {
				t.Errorf("WaitFor failed with %q, want %q", r.failed, tt.wantFail)
			}
			if tt.holdsAt > 0 && calls != tt.holdsAt {
				t.Errorf("cond called %d times, want %d: WaitFor goes on after it holds", calls, tt.holdsAt)
			}
		})
	}
}

func TestMetricSum(t *testing.T) {
	const exposition = `# TYPE floodgate_decisions_total counter
floodgate_decisions_total{result="allowed",rule="none",scope="default"} 3
floodgate_decisions_total{result="allowed",rule="login",scope="login"} 2
floodgate_decisions_total{result="denied",rule="none",scope="default"} 1
# TYPE up gauge
up 1
`
	for _, tc := range []struct {
		name   string
		labels []string
		sum    float64
		series int
	}{
		{"floodgate_decisions_total", []string{"result", "allowed"}, 5, 2},
		{"floodgate_decisions_total", []string{"result", "allowed", "scope", "login"}, 2, 1},
		{"floodgate_decisions_total", nil, 6, 3},
		{"floodgate_decisions_total", []string{"result", "fail_open"}, 0, 0},
		{"up", nil, 1, 1},
		{"absent_total", nil, 0, 0},
	} {
		if sum, n := MetricSum(t, exposition, tc.name, tc.labels...); sum != tc.sum || n != tc.series {
			t.Errorf("MetricSum(%s, %q) = %v over %d series, want %v over %d", tc.name, tc.labels, sum, n, tc.sum, tc.series)
		}
	}
	if sum, n := MetricSelect(t, exposition, `floodgate_decisions_total{result="allowed",scope="login"}`); sum != 2 || n != 1 {
		t.Errorf("MetricSelect = %v over %d series, want 2 over 1", sum, n)
	}
}
