// Package prom holds what floodgate's packages share to declare and
// register their Prometheus collectors: short constructors for a metric of
// a name and a help text, the latency buckets of one API call, and
// registration of a set of collectors as a whole.
//
// Each package still owns its metrics: it names them, documents them and
// registers them on the [prometheus.Registerer] it is given.
package prom

import "github.com/prometheus/client_golang/prometheus"

// CallBuckets are the buckets, in seconds, of the time floodgate takes to
// answer one call of an Envoy API (ext_authz Check, RLS ShouldRateLimit):
// from 50µs (a decision in memory) to 250ms (past Envoy's usual timeouts).
var CallBuckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3}

// Counter returns a counter named name with help.
func Counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

// CounterVec returns a counter vector named name with help, by labels.
func CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// CounterFunc returns a counter named name with help whose value f gives
// at each scrape.
func CounterFunc(name, help string, f func() float64) prometheus.CounterFunc {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
}

// Gauge returns a gauge named name with help.
func Gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

// GaugeFunc returns a gauge named name with help whose value f gives at
// each scrape.
func GaugeFunc(name, help string, f func() float64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
}

// Histogram returns a histogram named name with help and buckets.
func Histogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
}

// HistogramVec returns a histogram vector named name with help and
// buckets, by labels.
func HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Register registers every collector of cs on r, or none: when one fails,
// it unregisters those it had registered and returns that collector's
// error, for the caller to wrap with what it was registering.
func Register(r prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	return nil
}
