package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout: values (nanoseconds) below 2^subBits are counted
// exactly; above, each power of two is split into 2^(subBits-1) equal
// sub-buckets, so a recorded value is known to within 1/128 (0.8%) of itself,
// as in an HDR histogram with two significant digits.
const (
	subBits    = 8
	subCount   = 1 << subBits // values below this are exact
	halfCount  = subCount / 2 // sub-buckets per power of two above that
	maxExp     = 64 - subBits // the highest shift a uint64 value needs
	numBuckets = subCount + (maxExp)*halfCount
)

// Histogram records latencies in constant memory (about 60 KiB) with a
// relative error below 1%. The zero value is empty and ready to use. It is
// not safe for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max uint64
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	// v has bits.Len64(v) > subBits significant bits; keep the top subBits
	// of them (the top one is always 1, so halfCount distinct values).
	shift := bits.Len64(v) - subBits
	top := v >> uint(shift) // in [halfCount, subCount)
	return subCount + (shift-1)*halfCount + int(top-halfCount)
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	i -= subCount
	shift := i/halfCount + 1
	top := uint64(i%halfCount + halfCount)
	return (top+1)<<uint(shift) - 1
}

// Record adds one latency; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest value recorded, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the value below or at which a fraction q (0 to 1) of the
// recorded values lie: the upper end of the bucket holding the value of rank
// ceil(q*n), so never less than that value and at most 0.8% above it, and
// never above Max. It returns 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(bucketHigh(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
