package loadgen

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	// wrk 4.1.0 (Debian 12) with --latency, against a server answering 404,
	// with socket errors added as wrk prints them.
	const report = `Running 1s test @ http://127.0.0.1:37777/nonexistent
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.03ms    1.54ms  20.47ms   92.71%
    Req/Sec     1.33k   119.94     1.51k    70.00%
  Latency Distribution
     50%  635.00us
     75%    3.39ms
     90%    4.11ms
     99%    9.26ms
  1323 requests in 1.00s, 672.02KB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 1323
Requests/sec:   1322.73
Transfer/sec:    671.88KB
`
	got, err := parseWrk(report)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{Requests: 1323, Elapsed: time.Second, P50: 635 * time.Microsecond, P99: 9260 * time.Microsecond, Non2xx: 1323, Errors: 7}
	if got != want {
		t.Fatalf("parseWrk = %+v, want %+v", got, want)
	}
	if r := got.Rate(); r != 1323 {
		t.Errorf("Rate = %v, want 1323", r)
	}

	for _, bad := range []string{
		"",
		"Running 1s test @ http://x/\n  wrk: connection refused\n",
		"  Latency Distribution\n     50%    2.79ms\n     99%    9.26ms\n", // no count
		"  10 requests in 1.00s, 1KB read\n     50%    2.79ms\n",           // no p99
		"  10 requests in 1.00s, 1KB read\n     50%    soon\n     99%    9ms\n",
	} {
		if r, err := parseWrk(bad); err == nil {
			t.Errorf("parseWrk(%q) = %+v, want an error", bad, r)
		}
	}
}
