package testutil

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MetricSum returns the sum of the counters or gauges called name in a
// Prometheus text exposition whose labels include every pair of labels
// ("result", "allowed", ...), and how many series it added; 0, 0 when
// there is none. A test that asks for one label of a metric that has
// others (floodgate_decisions_total{result} among {result,scope,rule})
// gets the total over the rest. An exposition that does not parse fails
// the test.
func MetricSum(tb testing.TB, exposition, name string, labels ...string) (sum float64, series int) {
	tb.Helper()
	if len(labels)%2 != 0 {
		tb.Fatalf("MetricSum(%s): labels %q are not pairs", name, labels)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		tb.Fatalf("parse the metrics: %v", err)
	}
	mf, ok := mfs[name]
	if !ok {
		return 0, 0
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		default:
			tb.Fatalf("MetricSum(%s): neither a counter nor a gauge", name)
		}
		series++
	}
	return sum, series
}

// MetricSelect is MetricSum with the metric and its labels written as a
// series is: `name{label="value",...}` or a bare name.
func MetricSelect(tb testing.TB, exposition, selector string) (sum float64, series int) {
	tb.Helper()
	name, sel, _ := strings.Cut(strings.TrimSuffix(selector, "}"), "{")
	var labels []string
	for pair := range strings.SplitSeq(sel, ",") {
		if k, v, ok := strings.Cut(pair, "="); ok {
			labels = append(labels, k, strings.Trim(v, `"`))
		}
	}
	return MetricSum(tb, exposition, name, labels...)
}
