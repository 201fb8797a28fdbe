package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Metrics are the samples of a Prometheus text exposition: each series
// (name with its labels as written, e.g. `x_total{op="get"}`) to its value,
// and each metric name to the sum over its series.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format. Comments are skipped, and
// a histogram's _bucket, _sum and _count series are kept under their own
// names like any other.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := make(Metrics)
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces, so
		// the series ends at the '}' when there is one.
		var series, rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: line %q: unbalanced braces", line)
			}
			series, rest = line[:j+1], line[j+1:]
		} else {
			series, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		m[series] = v
		if name, _, ok := strings.Cut(series, "{"); ok {
			m[name] += v
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return m, nil
}

// Sub returns m minus before, series by series: the change over a run.
func (m Metrics) Sub(before Metrics) Metrics {
	out := make(Metrics, len(m))
	for k, v := range m {
		out[k] = v - before[k]
	}
	return out
}
