package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// StartTimeout bounds how long a started server may take to become
	// ready.
	StartTimeout = 20 * time.Second
	// BindAttempts is how many times a server is started on new free ports
	// when another process took a port between the probe and the bind.
	BindAttempts = 5

	// pollFirst and pollMax are Poll's first and longest pause.
	pollFirst = time.Millisecond
	pollMax   = 20 * time.Millisecond
)

// permanent marks an error that ends Poll at once.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Poll returns it at once instead of trying
// again: the condition can no longer come true (the process exited).
func Permanent(err error) error { return permanent{err} }

// Poll calls cond until it returns nil, returns an error wrapped by
// Permanent, or timeout has passed since the first call. It pauses 1ms
// after the first try, doubling up to 20ms, so a condition that holds soon
// is seen soon. It returns nil, the permanent error unwrapped, or the
// last error with how long it waited.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := pollFirst
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, pollMax)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it: the Start
// functions of this package retry with new ports when that happens
// (RetryBind).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// Loopback returns "127.0.0.1:port".
func Loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// AddrInUse reports whether a process's output says that it could not bind
// its port.
func AddrInUse(output string) bool {
	return strings.Contains(output, "address already in use") || strings.Contains(output, "Address already in use")
}

// RetryBind calls start up to BindAttempts times, until it succeeds or
// fails for another reason than a port taken meanwhile (the output of the
// process it returns, nil when none was started, says which). start stops
// its process when it fails.
func RetryBind[T any](start func() (T, *Process, error)) (T, error) {
	var zero T
	var last error
	for range BindAttempts {
		v, p, err := start()
		if err == nil {
			return v, nil
		}
		last = err
		if p == nil || !AddrInUse(p.Output()) {
			break
		}
	}
	return zero, last
}

// WaitHTTP polls url until it answers 200, p exits, or StartTimeout passes.
func WaitHTTP(p *Process, url string) error {
	client := &http.Client{Timeout: time.Second}
	err := Poll(StartTimeout, func() error {
		if err := p.ExitErr(); err != nil {
			return Permanent(err)
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: GET %s: no 200: %w", p.name, url, err)
	}
	return nil
}

// WaitTCP waits until addr accepts connections, p exits, or StartTimeout
// passes.
func WaitTCP(p *Process, addr string) error {
	err := Poll(StartTimeout, func() error {
		if err := p.ExitErr(); err != nil {
			return Permanent(err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("%s: nothing accepts connections on %s: %w", p.name, addr, err)
	}
	return nil
}
