package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// WrkResult is what one wrk run measured.
type WrkResult struct {
	Requests int64         // requests completed
	Elapsed  time.Duration // how long wrk ran, as it reports
	P50, P99 time.Duration // from wrk's latency distribution
	Non2xx   int64         // responses other than 2xx or 3xx
	Errors   int64         // socket errors of every kind
	CPU      time.Duration // wrk's own CPU time
}

// Rate returns the requests per second.
func (r WrkResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// FindWrk returns the path of wrk on PATH, or "" when there is none.
func FindWrk() string {
	p, err := exec.LookPath("wrk")
	if err != nil {
		return ""
	}
	return p
}

// Wrk runs wrk (bin) against url with one thread and conns connections for
// d (whole seconds, at least one) and parses its report.
func Wrk(ctx context.Context, bin, url string, conns int, d time.Duration) (WrkResult, error) {
	secs := max(int(d/time.Second), 1)
	cmd := exec.CommandContext(ctx, bin, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, strings.TrimSpace(string(out)))
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w", url, err)
	}
	res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

// parseWrk reads the report wrk prints with --latency.
func parseWrk(out string) (WrkResult, error) {
	var r WrkResult
	var haveCount, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "50%":
			d, err := wrkDuration(f[1])
			if err != nil {
				return r, err
			}
			r.P50, have50 = d, true
		case len(f) == 2 && f[0] == "99%":
			d, err := wrkDuration(f[1])
			if err != nil {
				return r, err
			}
			r.P99, have99 = d, true
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			// "26000 requests in 2.00s, 3.00MB read"
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("request count %q: %w", f[0], err)
			}
			d, err := wrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.Requests, r.Elapsed, haveCount = n, d, true
		case len(f) == 5 && f[0] == "Non-2xx":
			// "Non-2xx or 3xx responses: 26000"
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("non-2xx count %q: %w", f[4], err)
			}
			r.Non2xx = n
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("socket errors %q: %w", sc.Text(), err)
				}
				r.Errors += n
			}
		}
	}
	if !haveCount || !have50 || !have99 {
		return r, errors.New("no request count or latency distribution in its report")
	}
	return r, nil
}

// wrkDuration parses a duration as wrk prints it: 635.00us, 2.10ms, 1.00s,
// 1.50m.
func wrkDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}
