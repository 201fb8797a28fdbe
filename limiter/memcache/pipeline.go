package memcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Pipelined counters.
//
// gomemcache sends one command and waits for its answer: a counter that
// does not exist yet costs an incr that misses, an add, and sometimes a
// second incr, three round trips; a decision that reads and counts costs a
// round trip per call. On a loopback or a LAN, the cost of a round trip (two
// system calls on each side, a wake-up of memcached's worker and of the
// waiting goroutine) dwarfs the cost of a command, so counters go through a
// pipeline of their own instead: one write holding every command of a call,
// then one read of every answer, on a connection of a small pool per server.
//
// Counters change with the meta arithmetic command (memcached 1.6), which
// creates a missing counter atomically:
//
//	ma <key> N<exptime> J<delta> D<delta> v   add delta > 0: the new value, or delta for a new counter
//	ma <key> D0 v                             delta 0: the value, NF when missing
//	ma <key> MD D<-delta> v                   subtract: the new value (memcached stops at 0), NF when missing
//
// and counters are read with a classic multi-key get, sent first, so a batch
// reads before it adds. memcached answers the commands of one connection in
// order.

// maxKeyLen is memcached's longest key.
const maxKeyLen = 250

// legalKey reports whether memcached accepts key: 1 to 250 bytes, none of
// them a space or a control character.
func legalKey(key string) bool {
	if len(key) == 0 || len(key) > maxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// errMalformedKey is why a call with a key memcached refuses fails.
var errMalformedKey = errors.New("malformed key: memcached keys are 1 to 250 bytes without spaces or control characters")

// pipeline is a pool of connections to one memcached server on which a call
// writes all its commands, then reads all the answers. It is safe for
// concurrent use; each call has a connection to itself.
type pipeline struct {
	addr    net.Addr
	timeout time.Duration // bounds the dial, and the whole exchange
	maxIdle int

	mu   sync.Mutex
	idle []*pipeConn
}

// pipeConn is one connection of a pipeline.
type pipeConn struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
}

func newPipeline(addr net.Addr, timeout time.Duration, maxIdle int) *pipeline {
	return &pipeline{addr: addr, timeout: timeout, maxIdle: maxIdle}
}

// get returns an idle connection (pooled true), or dials a new one.
func (p *pipeline) get(deadline time.Time) (c *pipeConn, pooled bool, err error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	c, err = p.dial(deadline)
	return c, false, err
}

// dial opens a new connection.
func (p *pipeline) dial(deadline time.Time) (*pipeConn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial(p.addr.Network(), p.addr.String())
	if err != nil {
		return nil, err
	}
	return &pipeConn{nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 4096)}, nil
}

// put returns a connection whose exchange completed to the pool, or closes
// it when maxIdle connections are idle already.
func (p *pipeline) put(c *pipeConn) {
	p.mu.Lock()
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.nc.Close()
}

// close closes the idle connections; the pipeline stays usable.
func (p *pipeline) close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var first error
	for _, c := range idle {
		if err := c.nc.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// do reads the counters at gets, then applies adds, in one round trip. The
// keys must be legal. now dates the expiration of counters whose time to
// live passes 30 days. It returns the values read (missing keys absent) and
// the new value of each added counter, and fails on any error of the
// connection or the protocol, after which any of the adds may or may not
// have been applied.
func (p *pipeline) do(ctx context.Context, gets []string, adds []limiter.Increment, now time.Time) (map[string]int64, []int64, error) {
	deadline := time.Now().Add(p.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c, pooled, err := p.get(deadline)
	if err != nil {
		return nil, nil, err
	}
	vals, counts, err := c.exchange(deadline, gets, adds, now)
	if err != nil && pooled && closedBeforeAnswer(err) {
		// The server closed this idle connection, most likely because it
		// restarted: nothing was applied (a server that received the
		// commands and died lost its counters with them), so try once
		// more on a new connection.
		c.nc.Close()
		if c, err = p.dial(deadline); err != nil {
			return nil, nil, err
		}
		vals, counts, err = c.exchange(deadline, gets, adds, now)
	}
	if err != nil {
		// The connection may hold unread answers: never reuse it.
		c.nc.Close()
		return nil, nil, err
	}
	p.put(c)
	return vals, counts, nil
}

// errClosedBeforeAnswer marks an exchange whose connection was closed or
// reset by the server before the first byte of an answer.
var errClosedBeforeAnswer = errors.New("connection closed by the server before any answer")

// closedBeforeAnswer reports whether err is errClosedBeforeAnswer.
func closedBeforeAnswer(err error) bool { return errors.Is(err, errClosedBeforeAnswer) }

// exchange writes the commands, flushes them in one write when they fit the
// buffer, and reads the answers.
func (c *pipeConn) exchange(deadline time.Time, gets []string, adds []limiter.Increment, now time.Time) (map[string]int64, []int64, error) {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return nil, nil, err
	}
	w := c.w
	if len(gets) > 0 {
		w.WriteString("get")
		for _, k := range gets {
			w.WriteByte(' ')
			w.WriteString(k)
		}
		w.WriteString("\r\n")
	}
	var num [20]byte
	for _, a := range adds {
		w.WriteString("ma ")
		w.WriteString(a.Key)
		switch {
		case a.Delta > 0:
			w.WriteString(" N")
			w.Write(strconv.AppendInt(num[:0], int64(expiration(a.TTL, now)), 10))
			d := strconv.AppendInt(num[:0], a.Delta, 10)
			w.WriteString(" J")
			w.Write(d)
			w.WriteString(" D")
			w.Write(d)
		case a.Delta == 0:
			w.WriteString(" D0")
		default:
			w.WriteString(" MD D")
			// uint64(-delta) is right even for math.MinInt64.
			w.Write(strconv.AppendUint(num[:0], uint64(-a.Delta), 10))
		}
		w.WriteString(" v\r\n")
	}
	if err := w.Flush(); err != nil {
		w.Reset(c.nc) // drop what was not written
		if isClosed(err) {
			return nil, nil, fmt.Errorf("%w: %w", errClosedBeforeAnswer, err)
		}
		return nil, nil, err
	}
	if _, err := c.r.Peek(1); err != nil {
		if isClosed(err) {
			return nil, nil, fmt.Errorf("%w: %w", errClosedBeforeAnswer, err)
		}
		return nil, nil, err
	}

	vals := make(map[string]int64, len(gets))
	if len(gets) > 0 {
		if err := c.readValues(vals); err != nil {
			return nil, nil, err
		}
	}
	counts := make([]int64, len(adds))
	for i, a := range adds {
		v, err := c.readArithmetic()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", a.Key, err)
		}
		counts[i] = v
	}
	return vals, counts, nil
}

// isClosed reports whether err says the peer closed or reset the
// connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// line reads one answer line without its "\r\n".
func (c *pipeConn) line() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("answer line longer than 4 KiB")
		}
		return "", err
	}
	s := string(b)
	if !strings.HasSuffix(s, "\r\n") {
		return "", fmt.Errorf("answer line %q does not end in CRLF", s)
	}
	return s[:len(s)-2], nil
}

// readValues reads the answer to a get: VALUE blocks up to END.
func (c *pipeConn) readValues(vals map[string]int64) error {
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if l == "END" {
			return nil
		}
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "VALUE" {
			return answerError("get", l)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil || n < 0 || n > 1<<20 {
			return answerError("get", l)
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		if string(data[n:]) != "\r\n" {
			return fmt.Errorf("value of %q does not end in CRLF", f[1])
		}
		// memcached pads a value with spaces when decr shortens it.
		v, err := strconv.ParseInt(strings.TrimSpace(string(data[:n])), 10, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%q: value %q is not a counter", f[1], data[:n])
		}
		vals[f[1]] = v
	}
}

// readArithmetic reads the answer to one ma: the value, or 0 for NF.
func (c *pipeConn) readArithmetic() (int64, error) {
	l, err := c.line()
	if err != nil {
		return 0, err
	}
	if l == "NF" {
		return 0, nil
	}
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "VA" {
		return 0, answerError("ma", l)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 1 || n > 20 {
		return 0, answerError("ma", l)
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return 0, err
	}
	if string(data[n:]) != "\r\n" {
		return 0, errors.New("ma value does not end in CRLF")
	}
	v, err := strconv.ParseUint(string(data[:n]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ma value %q: %w", data[:n], err)
	}
	if v > 1<<63-1 {
		return 0, fmt.Errorf("value %d overflows int64", v)
	}
	return int64(v), nil
}

// answerError reports an answer that is not what cmd expects, such as
// memcached's CLIENT_ERROR for an incr of a value that is not a number.
func answerError(cmd, l string) error {
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	return fmt.Errorf("unexpected answer to %s: %q", cmd, l)
}
