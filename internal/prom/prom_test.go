package prom

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegister(t *testing.T) {
	for _, tc := range []struct {
		name    string
		taken   bool // floodgate_b_total is registered before
		wantErr bool
		want    int // collectors registered after the call
	}{
		{name: "all registered", want: 2},
		{name: "one taken: none registered", taken: true, wantErr: true, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			if tc.taken {
				reg.MustRegister(Counter("floodgate_b_total", "B."))
			}
			err := Register(reg, Counter("floodgate_a_total", "A."), Counter("floodgate_b_total", "B."))
			if (err != nil) != tc.wantErr {
				t.Fatalf("Register: %v, want error %v", err, tc.wantErr)
			}
			if n, err := testutil.GatherAndCount(reg); err != nil || n != tc.want {
				t.Errorf("%d series registered (%v), want %d", n, err, tc.want)
			}
		})
	}
}

func TestConstructors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cv := CounterVec("floodgate_cv_total", "A counter vector.", "result")
	cv.WithLabelValues("ok").Add(2)
	g := Gauge("floodgate_g", "A gauge.")
	g.Set(3)
	h := Histogram("floodgate_h_seconds", "A histogram.", []float64{1})
	h.Observe(0.5)
	hv := HistogramVec("floodgate_hv_seconds", "A histogram vector.", CallBuckets, "op")
	hv.WithLabelValues("get").Observe(1e-3)
	if err := Register(reg, Counter("floodgate_c_total", "A counter."), cv, g, h, hv,
		CounterFunc("floodgate_cf_total", "A counter func.", func() float64 { return 4 }),
		GaugeFunc("floodgate_gf", "A gauge func.", func() float64 { return 5 }),
	); err != nil {
		t.Fatal(err)
	}
	want := `# HELP floodgate_c_total A counter.
# TYPE floodgate_c_total counter
floodgate_c_total 0
# HELP floodgate_cf_total A counter func.
# TYPE floodgate_cf_total counter
floodgate_cf_total 4
# HELP floodgate_cv_total A counter vector.
# TYPE floodgate_cv_total counter
floodgate_cv_total{result="ok"} 2
# HELP floodgate_g A gauge.
# TYPE floodgate_g gauge
floodgate_g 3
# HELP floodgate_gf A gauge func.
# TYPE floodgate_gf gauge
floodgate_gf 5
# HELP floodgate_h_seconds A histogram.
# TYPE floodgate_h_seconds histogram
floodgate_h_seconds_bucket{le="1"} 1
floodgate_h_seconds_bucket{le="+Inf"} 1
floodgate_h_seconds_sum 0.5
floodgate_h_seconds_count 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"floodgate_c_total", "floodgate_cf_total", "floodgate_cv_total", "floodgate_g", "floodgate_gf", "floodgate_h_seconds"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(hv); n != 1 {
		t.Errorf("histogram vector: %d series, want 1", n)
	}
}
