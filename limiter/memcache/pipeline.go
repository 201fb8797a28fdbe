package memcache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
// Any other answer, NF to an increment among them, is an error: with N,
// memcached creates a missing counter, so NF there means the increment was
// not applied, and reading it as zero would let the requestor through
// uncounted.
//
// Counters are read with a classic multi-key get, sent after the
// arithmetic, so a batch adds before it reads: memcached answers the commands
// of one connection in order, so the get sees every change of the batch and
// every change that any connection made before the batch's own (see
// limiter/doc.go, "Exactness across replicas").

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

// pipeline carries the counter commands of every call to one memcached
// server. It keeps at most conns connections busy with exchanges. A call
// that finds one free takes it and exchanges its commands alone: one write,
// one read. A call that finds them all busy joins a queue, and the next
// connection to come free carries the whole queue in one exchange: one
// write holding the commands of every queued call, then one read of all
// their answers, which memcached gives in order. Under load, concurrent
// calls thus share system calls and wake-ups on both sides (implicit
// pipelining, as in flat combining: the call that gets the connection does
// the work for the others, and no goroutine of the pipeline's own stands in
// between); when calls are rare, each still has a round trip to itself.
//
// It is safe for concurrent use.
type pipeline struct {
	addr    net.Addr
	timeout time.Duration // bounds a dial, and one exchange
	conns   int           // most connections busy at once

	mu    sync.Mutex
	idle  []*pipeConn // connections free for the next exchange
	busy  int         // connections (or dials) carrying an exchange
	queue []*call     // calls waiting for a connection, oldest first

	stats *PipelineStats // shared by the pipelines of one Store
}

// PipelineStats counts the round trips of a Store's counter pipelines
// (Add and Batch) and the calls they carried; calls over round trips is
// how many calls a round trip carried on average.
type PipelineStats struct {
	// RoundTrips is the number of exchanges: one write of commands, then
	// one read of their answers, successful or not.
	RoundTrips atomic.Uint64
	// Calls is the number of Add and Batch calls the round trips carried.
	Calls atomic.Uint64
}

// maxBatchKeys bounds the keys (read or changed) of the calls one exchange
// carries, at least one call whatever its size, so that the commands and
// the answers of an exchange stay well within the sockets' buffers: a
// pipeline writes all its commands before it reads any answer.
const maxBatchKeys = 512

// call is one caller's commands and, once an exchange carried them, their
// answers.
type call struct {
	gets []string
	adds []limiter.Increment
	now  time.Time
	// deadline is when the caller stops waiting: the pipeline's timeout
	// after the call began, or the context's deadline if sooner.
	deadline time.Time

	// Set under pipeline.mu when the call leaves the queue.
	state callState
	// When the call leaves the queue to lead: the calls its exchange
	// carries (itself first) and the connection for it, nil to dial one.
	batch []*call
	conn  *pipeConn
	alone [1]*call // the batch of a call that leads at once

	// Set by the exchange that carried the call, before ready.
	vals   map[string]int64
	counts []int64
	err    error
	// countBuf backs counts for the usual call, which changes a second's
	// counter and a minute's.
	countBuf [2]int64

	// ready receives once, when the call leaves the queue to lead or when
	// its answers are set.
	ready chan struct{}
}

// callState is where a call stands.
type callState uint8

const (
	queued  callState = iota // waiting for a connection
	leading                  // its goroutine exchanges its batch
	carried                  // another call's exchange carries it
)

// keys counts the keys the call reads or changes.
func (c *call) keys() int { return len(c.gets) + len(c.adds) }

// pipeConn is one connection of a pipeline.
type pipeConn struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
}

// newPipeline returns a pipeline to addr of at most conns connections,
// counting in stats (a PipelineStats of its own when nil).
func newPipeline(addr net.Addr, timeout time.Duration, conns int, stats *PipelineStats) *pipeline {
	if stats == nil {
		stats = new(PipelineStats)
	}
	return &pipeline{addr: addr, timeout: timeout, conns: max(conns, 1), stats: stats}
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

// close closes the idle connections; the pipeline stays usable, and a
// connection busy now is kept when its exchange ends.
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

// do applies adds, then reads the counters at gets, in one round trip,
// which it may share with other calls. The keys must be legal. now dates
// the expiration of counters whose time to live passes 30 days. It returns
// the values read (missing keys absent) and the new value of each added
// counter, and fails on any error of the connection or the protocol, after
// which any of the adds may or may not have been applied. A call that ctx
// ends while it waits in the queue is dropped from it, unsent.
func (p *pipeline) do(ctx context.Context, gets []string, adds []limiter.Increment, now time.Time) (map[string]int64, []int64, error) {
	deadline := time.Now().Add(p.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c := &call{gets: gets, adds: adds, now: now, deadline: deadline, ready: make(chan struct{}, 1)}
	p.mu.Lock()
	if p.busy < p.conns {
		// A connection is free, so nothing is queued: lead at once.
		p.busy++
		c.state = leading
		c.alone[0] = c
		c.batch = c.alone[:]
		if n := len(p.idle); n > 0 {
			c.conn = p.idle[n-1]
			p.idle = p.idle[:n-1]
		}
		p.mu.Unlock()
		p.lead(c)
		return c.vals, c.counts, c.err
	}
	p.queue = append(p.queue, c)
	p.mu.Unlock()

	// No timer: the exchange in flight ends by its deadline, at most a
	// timeout from now, and release then fails the queued calls whose
	// deadline has passed.
	var err error
	select {
	case <-c.ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.mu.Lock()
		st := c.state
		if st == queued {
			p.queue = slices.DeleteFunc(p.queue, func(q *call) bool { return q == c })
		}
		p.mu.Unlock()
		switch st {
		case queued:
			return nil, nil, fmt.Errorf("%w: %w", limiter.ErrOverloaded, err) // never sent
		case carried:
			select {
			case <-c.ready: // answered after all
			default:
				// The exchange carrying the call will set its answers
				// and signal ready, which has room for it; nobody
				// waits for them.
				return nil, nil, err
			}
		case leading:
			// The calls of the batch wait on this goroutine: lead it.
			<-c.ready
		}
	}
	if c.state == leading { // set before ready, under p.mu
		p.lead(c)
	}
	return c.vals, c.counts, c.err
}

// lead runs c's batch on c's connection (dialling one when c.conn is nil),
// hands the connection on to the calls queued meanwhile, and delivers the
// answers of the batch's calls.
func (p *pipeline) lead(c *call) {
	batch := c.batch
	// The exchange lasts until the last of its calls stops waiting: the
	// newest call of the batch, which began at most a timeout ago.
	deadline := c.deadline
	for _, b := range batch[1:] {
		if b.deadline.After(deadline) {
			deadline = b.deadline
		}
	}
	var conn *pipeConn
	var err error
	if time.Now().Before(deadline) {
		conn, err = p.exchange(c.conn, deadline, batch)
		p.stats.RoundTrips.Add(1)
		p.stats.Calls.Add(uint64(len(batch)))
	} else {
		// Every caller has given up: send nothing, keep the connection.
		conn = c.conn
		fail(batch, fmt.Errorf("no answer within %v: %w", p.timeout, os.ErrDeadlineExceeded))
	}
	if err != nil && conn != nil {
		// The connection may hold unread answers: never reuse it.
		conn.nc.Close()
		conn = nil
	}
	p.release(conn)
	for _, b := range batch[1:] {
		b.ready <- struct{}{}
	}
	c.batch, c.conn = nil, nil
}

// exchange carries batch on conn, or on a new connection when conn is nil,
// and sets the answers (or the error) of every call of it. It returns the
// connection it used (nil if none could be had) and the error that ended
// the exchange early, if any.
func (p *pipeline) exchange(conn *pipeConn, deadline time.Time, batch []*call) (*pipeConn, error) {
	pooled := conn != nil
	var err error
	if !pooled {
		if conn, err = p.dial(deadline); err != nil {
			fail(batch, err)
			return nil, err
		}
	}
	err = conn.exchange(deadline, batch)
	if err != nil && pooled && closedBeforeAnswer(err) {
		// The server closed this idle connection, most likely because it
		// restarted: nothing was applied (a server that received the
		// commands and died lost its counters with them), so try once
		// more on a new connection.
		conn.nc.Close()
		if conn, err = p.dial(deadline); err != nil {
			fail(batch, err)
			return nil, err
		}
		err = conn.exchange(deadline, batch)
	}
	return conn, err
}

// fail sets err as the outcome of every call of batch.
func fail(batch []*call, err error) {
	for _, b := range batch {
		b.vals, b.counts, b.err = nil, nil, err
	}
}

// release gives a connection whose exchange ended (nil when it failed and
// was closed) to the calls queued meanwhile: the oldest of them leads an
// exchange carrying as many of them as fit. With none queued, the
// connection goes idle.
func (p *pipeline) release(conn *pipeConn) {
	p.mu.Lock()
	// Calls whose caller has stopped waiting leave the queue unsent.
	var expired []*call
	if now := time.Now(); len(p.queue) > 0 && !p.queue[0].deadline.After(now) {
		p.queue = slices.DeleteFunc(p.queue, func(q *call) bool {
			if q.deadline.After(now) {
				return false
			}
			q.state = carried
			expired = append(expired, q)
			return true
		})
		defer func() {
			fail(expired, fmt.Errorf("no connection free within %v: %w: %w", p.timeout, limiter.ErrOverloaded, os.ErrDeadlineExceeded))
			for _, q := range expired {
				q.ready <- struct{}{}
			}
		}()
	}
	if len(p.queue) == 0 {
		p.busy--
		if conn != nil {
			p.idle = append(p.idle, conn)
		}
		p.mu.Unlock()
		return
	}
	n, keys := 0, 0
	for n < len(p.queue) && (n == 0 || keys+p.queue[n].keys() <= maxBatchKeys) {
		keys += p.queue[n].keys()
		n++
	}
	batch := slices.Clone(p.queue[:n])
	p.queue = slices.Delete(p.queue, 0, n)
	lead := batch[0]
	lead.state = leading
	lead.batch = batch
	lead.conn = conn
	for _, b := range batch[1:] {
		b.state = carried
	}
	p.mu.Unlock()
	lead.ready <- struct{}{}
}

// errClosedBeforeAnswer marks an exchange whose connection was closed or
// reset by the server before the first byte of an answer.
var errClosedBeforeAnswer = errors.New("connection closed by the server before any answer")

// closedBeforeAnswer reports whether err is errClosedBeforeAnswer.
func closedBeforeAnswer(err error) bool { return errors.Is(err, errClosedBeforeAnswer) }

// exchange writes the commands of every call of batch, flushed in as few
// writes as the buffer allows, then reads the answers of each call in turn
// and sets them. An error ends the exchange: the calls answered before it
// keep their answers, and the error becomes the outcome of the others.
func (c *pipeConn) exchange(deadline time.Time, batch []*call) error {
	if err := c.nc.SetDeadline(deadline); err != nil {
		fail(batch, err)
		return err
	}
	for _, b := range batch {
		c.writeCommands(b)
	}
	err := c.w.Flush()
	if err != nil {
		c.w.Reset(c.nc) // drop what was not written
	} else {
		_, err = c.r.Peek(1)
	}
	if err != nil {
		if isClosed(err) {
			err = fmt.Errorf("%w: %w", errClosedBeforeAnswer, err)
		}
		fail(batch, err)
		return err
	}
	for i, b := range batch {
		if err := c.readAnswers(b); err != nil {
			fail(batch[i:], err)
			return err
		}
	}
	if n := c.r.Buffered(); n > 0 {
		// More answers than commands: the answers read may belong to
		// other commands than those they were taken for.
		err := fmt.Errorf("%d bytes after the last answer: the server answered more than was asked", n)
		fail(batch, err)
		return err
	}
	return nil
}

// writeCommands buffers the commands of call b: a meta arithmetic command
// per add, then a multi-key get of its gets.
func (c *pipeConn) writeCommands(b *call) {
	w := c.w
	// Numbers are formatted straight into the writer's free space.
	for _, a := range b.adds {
		w.WriteString("ma ")
		w.WriteString(a.Key)
		switch {
		case a.Delta > 0:
			w.WriteString(" N")
			w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(expiration(a.TTL, b.now)), 10))
			w.WriteString(" J")
			w.Write(strconv.AppendInt(w.AvailableBuffer(), a.Delta, 10))
			w.WriteString(" D")
			w.Write(strconv.AppendInt(w.AvailableBuffer(), a.Delta, 10))
		case a.Delta == 0:
			w.WriteString(" D0")
		default:
			w.WriteString(" MD D")
			// uint64(-delta) is right even for math.MinInt64.
			w.Write(strconv.AppendUint(w.AvailableBuffer(), uint64(-a.Delta), 10))
		}
		w.WriteString(" v\r\n")
	}
	if len(b.gets) > 0 {
		w.WriteString("get")
		for _, k := range b.gets {
			w.WriteByte(' ')
			w.WriteString(k)
		}
		w.WriteString("\r\n")
	}
}

// readAnswers reads the answers to call b's commands and sets them.
func (c *pipeConn) readAnswers(b *call) error {
	var counts []int64
	if len(b.adds) <= len(b.countBuf) {
		counts = b.countBuf[:len(b.adds)]
	} else {
		counts = make([]int64, len(b.adds))
	}
	for i, a := range b.adds {
		v, err := c.readArithmetic(a.Delta)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
		counts[i] = v
	}
	var vals map[string]int64 // nil, which reads as empty, without gets
	if len(b.gets) > 0 {
		vals = make(map[string]int64, len(b.gets))
		if err := c.readValues(b.gets, vals); err != nil {
			return err
		}
	}
	b.vals, b.counts, b.err = vals, counts, nil
	return nil
}

// isClosed reports whether err says the peer closed or reset the
// connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// line reads one answer line without its "\r\n". The line is valid until
// the next read.
func (c *pipeConn) line() ([]byte, error) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("answer line longer than 4 KiB")
		}
		return nil, err
	}
	l, ok := bytes.CutSuffix(b, crlf)
	if !ok {
		return nil, fmt.Errorf("answer line %q does not end in CRLF", b)
	}
	return l, nil
}

var (
	crlf   = []byte("\r\n")
	end    = []byte("END")
	value  = []byte("VALUE")
	va     = []byte("VA")
	nf     = []byte("NF")
	spaces = " "
)

// readValues reads the answer to a get of keys into vals: VALUE blocks up
// to END, one for each key found, in the order of keys (memcached answers
// a multi-key get in order). A value of a key not asked for, or out of
// order, is an error: a missing key counts as zero, so a value answered
// under the wrong key would be a count lost.
func (c *pipeConn) readValues(keys []string, vals map[string]int64) error {
	next := 0 // the index in keys of the next key that may be answered
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if bytes.Equal(l, end) {
			return nil
		}
		// VALUE <key> <flags> <bytes> [<cas>]
		var buf [5][]byte
		f := fields(buf[:0], l)
		if len(f) < 4 || !bytes.Equal(f[0], value) {
			return answerError("get", l)
		}
		n, err := strconv.Atoi(string(f[3]))
		if err != nil || n < 0 || n > 20 {
			// A counter has at most 20 digits; anything longer was not
			// written by floodgate.
			return answerError("get", l)
		}
		i := next
		for i < len(keys) && keys[i] != string(f[1]) { // compared without allocating
			i++
		}
		if i == len(keys) {
			return fmt.Errorf("get: value of %q, which is not asked for or comes out of order", f[1])
		}
		next = i + 1
		key := keys[i]
		data, err := c.line()
		if err != nil {
			return fmt.Errorf("value of %q: %w", key, err)
		}
		if len(data) != n {
			return fmt.Errorf("value of %q: %d bytes, want %d", key, len(data), n)
		}
		// memcached pads a value with spaces when decr shortens it.
		v, err := strconv.ParseInt(string(bytes.TrimRight(data, spaces)), 10, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%q: value %q is not a counter", key, data)
		}
		vals[key] = v
	}
}

// errIncrementNotFound is why an increment answered NF fails.
var errIncrementNotFound = errors.New("NF (not found) to an increment that creates a missing counter: the increment was not applied")

// readArithmetic reads the answer to one ma of delta (see the command forms
// at the top of this file): the counter's new value, which is at least
// delta when delta is positive, or 0 for NF when delta is zero or negative
// (a read or a decrement of a missing counter). Any other answer is an
// error.
func (c *pipeConn) readArithmetic(delta int64) (int64, error) {
	l, err := c.line()
	if err != nil {
		return 0, err
	}
	if bytes.Equal(l, nf) {
		if delta > 0 {
			return 0, errIncrementNotFound
		}
		return 0, nil
	}
	// VA <bytes> [<flags>]
	var buf [3][]byte
	f := fields(buf[:0], l)
	if len(f) < 2 || !bytes.Equal(f[0], va) {
		return 0, answerError("ma", l)
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil || n < 1 || n > 20 {
		return 0, answerError("ma", l)
	}
	data, err := c.line()
	if err != nil {
		return 0, fmt.Errorf("ma value: %w", err)
	}
	if len(data) != n {
		return 0, fmt.Errorf("ma value %q: want %d bytes", data, n)
	}
	v, err := strconv.ParseUint(string(data), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ma value %q: %w", data, err)
	}
	if v > 1<<63-1 {
		return 0, fmt.Errorf("value %d overflows int64", v)
	}
	if delta > 0 && int64(v) < delta {
		return 0, fmt.Errorf("value %d after an increment by %d", v, delta)
	}
	return int64(v), nil
}

// fields appends to dst the fields of l, split at runs of spaces, up to
// dst's capacity, and returns it. The fields share l's bytes, and nothing is
// allocated when dst is backed by the caller's array.
func fields(dst [][]byte, l []byte) [][]byte {
	for len(l) > 0 && len(dst) < cap(dst) {
		l = bytes.TrimLeft(l, spaces)
		if len(l) == 0 {
			break
		}
		i := bytes.IndexByte(l, ' ')
		if i < 0 {
			i = len(l)
		}
		dst = append(dst, l[:i])
		l = l[i:]
	}
	return dst
}

// answerError reports an answer that is not what cmd expects, such as
// memcached's CLIENT_ERROR for an incr of a value that is not a number.
func answerError(cmd string, line []byte) error {
	l := string(line)
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	return fmt.Errorf("unexpected answer to %s: %q", cmd, l)
}
