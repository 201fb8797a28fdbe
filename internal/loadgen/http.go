package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// HTTPOptions says how HTTP sends requests at a fixed rate. URL, Rate and
// Duration are required.
type HTTPOptions struct {
	URL string
	// Rate is the number of requests started per second, on a fixed
	// schedule whatever the answers' latency (an open loop).
	Rate float64
	// Duration is how long requests are started for.
	Duration time.Duration
	// Workers bounds the requests in flight (and the connections); zero
	// means 64. A request whose start time comes while all workers are busy
	// waits for one, and that wait counts in its latency.
	Workers int
	// Timeout bounds each request; zero means 5s.
	Timeout time.Duration
}

// HTTPResult is what one HTTP run measured.
type HTTPResult struct {
	// Requests answered, by status class; Errors failed without an answer.
	Status2xx, Status429, OtherStatus, Errors int64
	FirstError                                error
	// Elapsed is the time from the first scheduled start to the last answer.
	Elapsed time.Duration
	// Latency is measured from each request's scheduled start, so queueing
	// behind a slow answer counts (no coordinated omission).
	Latency Histogram
}

// add merges o into r, as if one run had measured both.
func (r *HTTPResult) add(o *HTTPResult) {
	r.Status2xx += o.Status2xx
	r.Status429 += o.Status429
	r.OtherStatus += o.OtherStatus
	r.Errors += o.Errors
	if r.FirstError == nil {
		r.FirstError = o.FirstError
	}
	r.Elapsed += o.Elapsed
	r.Latency.Merge(&o.Latency)
}

// Answered returns the requests that got an HTTP answer.
func (r *HTTPResult) Answered() int64 { return r.Status2xx + r.Status429 + r.OtherStatus }

// Rate returns the answered requests per second.
func (r *HTTPResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered()) / r.Elapsed.Seconds()
}

// Summary is one line: answers, rate, p50, p99 and the statuses.
func (r *HTTPResult) Summary() string {
	s := strconv.FormatInt(r.Answered(), 10) + " requests, " + fmtRate(r.Rate()) + "/s, p50 " +
		fmtDur(r.Latency.Quantile(0.50)) + ", p99 " + fmtDur(r.Latency.Quantile(0.99)) + ", " +
		strconv.FormatInt(r.Status2xx, 10) + " 2xx, " + strconv.FormatInt(r.Status429, 10) + " 429"
	if r.OtherStatus > 0 {
		s += ", " + strconv.FormatInt(r.OtherStatus, 10) + " other"
	}
	if r.Errors > 0 {
		s += ", " + strconv.FormatInt(r.Errors, 10) + " errors (first: " + r.FirstError.Error() + ")"
	}
	return s
}

// HTTP sends GET o.URL at o.Rate per second for o.Duration and measures
// the answers. It fails only on invalid options or when ctx ends.
func HTTP(ctx context.Context, o HTTPOptions) (*HTTPResult, error) {
	if o.URL == "" || o.Rate <= 0 || o.Duration <= 0 {
		return nil, errors.New("http load: URL, Rate and Duration are required")
	}
	workers, timeout := o.Workers, o.Timeout
	if workers <= 0 {
		workers = 64
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	tr := &http.Transport{
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}

	total := int64(o.Rate * o.Duration.Seconds())
	due := make(chan time.Time, total)
	var (
		mu  sync.Mutex
		res = &HTTPResult{}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			r := httpWorker(ctx, client, o.URL, due)
			mu.Lock()
			defer mu.Unlock()
			res.add(r)
		})
	}
	start := time.Now()
	schedule(ctx, due, start, total, time.Duration(float64(time.Second)/o.Rate))
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("http load: %w", err)
	}
	return res, nil
}

// schedule sends due the instants start, start+interval, ... , total of
// them, each when it comes, and closes due; it stops early when ctx ends.
func schedule(ctx context.Context, due chan<- time.Time, start time.Time, total int64, interval time.Duration) {
	defer close(due)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		due <- at
	}
}

// httpWorker sends GET url with client at each instant due gives, until due
// is closed, and returns what it measured, each latency counted from the
// instant. Once ctx ends it drains due without sending.
func httpWorker(ctx context.Context, client *http.Client, url string, due <-chan time.Time) *HTTPResult {
	r := &HTTPResult{}
	for at := range due {
		if ctx.Err() != nil {
			continue // drain
		}
		status, err := get(ctx, client, url)
		if err != nil {
			r.Errors++
			r.FirstError = cmpErr(r.FirstError, err)
			continue
		}
		switch {
		case status/100 == 2:
			r.Status2xx++
		case status == http.StatusTooManyRequests:
			r.Status429++
		default:
			r.OtherStatus++
		}
		r.Latency.Record(time.Since(at))
	}
	return r
}

// get sends GET url with client, reads the whole answer and returns its
// status.
func get(ctx context.Context, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, nil
}

// cmpErr keeps the first error.
func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
