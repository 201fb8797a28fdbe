package loadgen

import (
	"fmt"
	"strconv"
	"time"
)

// fmtRate formats a rate with thousands separators: 12,345.
func fmtRate(r float64) string { return fmtCount(int(r + 0.5)) }

// fmtCount formats n with thousands separators: 100,000.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// fmtDur formats a latency in µs below 10ms and in ms above, with three
// significant digits.
func fmtDur(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 10:
		return fmt.Sprintf("%.2fµs", us)
	case us < 100:
		return fmt.Sprintf("%.1fµs", us)
	case us < 10_000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 100_000:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.0fms", us/1000)
}

// fmtSignedDur is fmtDur with a sign: +120µs, -3.0µs.
func fmtSignedDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}
