package testutil

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// ExpectSeries checks what g gathers against want, one series a line as
// Prometheus writes them: `name{label="value",...} value` (blank lines
// are skipped). Each line's selector, read as MetricSelect reads it, must
// match at least one series, and the sum of those must be the value; a
// series present at 0 passes a line that wants 0, an absent one does not.
func ExpectSeries(tb testing.TB, g prometheus.Gatherer, want string) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	var exposition strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&exposition, mf); err != nil {
			tb.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	for line := range strings.Lines(want) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			tb.Fatalf("ExpectSeries: %q has no value", line)
		}
		selector := line[:i]
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("ExpectSeries: %q: %v", line, err)
		}
		sum, n := MetricSelect(tb, exposition.String(), selector)
		if n == 0 {
			tb.Errorf("%s: no such series, want %v", selector, v)
		} else if sum != v {
			tb.Errorf("%s = %v, want %v", selector, sum, v)
		}
	}
}
