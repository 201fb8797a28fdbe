package memcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache/internal/wire"
)

// The pipeline: every call to one server, on one small pool of connections.
//
// A round trip costs far more than a command: on a loopback or a LAN, two
// system calls on each side and a wake-up of memcached's worker and of the
// waiting goroutine dwarf the work of an increment. So a call's commands go
// out in one write and their answers come back in one read, and calls that
// wait for a connection go out together: one write holding the commands of
// every waiting call, then one read of all their answers, which memcached
// gives in order. What the commands are, and how their answers parse, is
// package wire's; this file only moves them.
//
// memcached answers the commands of one connection in order, so the
// counters a Batch reads after its increments include them and every change
// that any connection made before the Batch's own (see limiter/doc.go,
// "Exactness across replicas").

// pipeline carries the calls of a Store to one memcached server: counter
// changes and reads (Add, Get, Batch) and value reads and writes
// (GetVersioned, CompareAndSwap). It keeps at most conns connections busy
// with exchanges. A call that finds one free takes it and exchanges its
// commands alone: one write, one read. A call that finds them all busy
// joins a queue, and the next connection to come free carries the whole
// queue in one exchange: one write holding the commands of every queued
// call, then one read of all their answers. Under load, concurrent calls
// thus share system calls and wake-ups on both sides (implicit pipelining,
// as in flat combining: the call that gets the connection does the work for
// the others, and no goroutine of the pipeline's own stands in between);
// when calls are rare, each still has a round trip to itself.
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

// PipelineStats counts the calls of a Store's pipelines, over all its
// servers, and the round trips that carried them; calls over round trips
// is how many calls a round trip carried on average. It is safe to read
// while the Store is in use.
type PipelineStats struct {
	// RoundTrips is the number of exchanges: one write of commands, then
	// one read of their answers, successful or not.
	RoundTrips atomic.Uint64
	// Calls is the number of calls (Add, Get of one server, Batch,
	// GetVersioned, CompareAndSwap) the round trips carried.
	Calls atomic.Uint64
	// Saturated is the number of calls that were never sent because every
	// connection to their server stayed busy until their deadline, or
	// until their context ended; they failed with limiter.ErrOverloaded.
	Saturated atomic.Uint64
	// InFlight is the number of calls running now: waiting for a
	// connection, or in an exchange.
	InFlight atomic.Int64
}

// maxBatchKeys bounds the size of the calls one exchange carries, at least
// one call whatever its size, so that the commands and the answers of an
// exchange stay well within the sockets' buffers: a pipeline writes all its
// commands before it reads any answer. A counter call counts the keys it
// reads or changes, a value read one, and a value write one and one per
// valueBytesPerKey bytes of the value.
const (
	maxBatchKeys     = 512
	valueBytesPerKey = 128
)

// call is one caller's commands and, once an exchange carried them, their
// answers.
type call struct {
	// Counter changes and reads, or, when val is set, one value read or
	// write (apart, so that a counter call does not carry its room).
	gets []string
	adds []limiter.Increment
	val  *valueOp
	now  time.Time // dates the expirations past 30 days
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

// valueKind says which value command a call carries.
type valueKind uint8

const (
	valueGet  valueKind = iota + 1 // GetVersioned: mg
	valueSwap                      // CompareAndSwap: ms, as an add when version is 0
)

// valueOp is a value read or write, and its answer.
type valueOp struct {
	kind    valueKind
	key     string
	value   []byte        // valueSwap: what to store
	version uint64        // valueSwap: the CAS unique the item must still have; 0 to add
	ttl     time.Duration // valueSwap

	// Set by the exchange: the item read and whether it was found
	// (valueGet), or whether the value was stored (valueSwap).
	item wire.Item
	ok   bool
}

// callState is where a call stands.
type callState uint8

const (
	queued  callState = iota // waiting for a connection
	leading                  // its goroutine exchanges its batch
	carried                  // another call's exchange carries it
)

// keys returns the size of the call in keys, for maxBatchKeys.
func (c *call) keys() int {
	switch {
	case c.val == nil:
		return len(c.gets) + len(c.adds)
	case c.val.kind == valueSwap:
		return 1 + len(c.val.value)/valueBytesPerKey
	}
	return 1
}

// pipeConn is one connection of a pipeline.
type pipeConn struct {
	nc net.Conn
	r  *wire.Reader
	w  *wire.Writer
}

// newPipeConn returns nc with a reader and a writer of 4 KiB buffers.
func newPipeConn(nc net.Conn) *pipeConn {
	return &pipeConn{nc: nc, r: wire.NewReader(nc), w: wire.NewWriter(nc, 4096)}
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
	return newPipeConn(nc), nil
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

// counters applies adds, then reads the counters at gets, in one round
// trip, which it may share with other calls. The keys must be legal. now
// dates the expiration of counters whose time to live passes 30 days. It
// returns the values read (missing keys absent) and the new value of each
// added counter, and fails on any error of the connection or the protocol,
// after which any of the adds may or may not have been applied.
func (p *pipeline) counters(ctx context.Context, gets []string, adds []limiter.Increment, now time.Time) (map[string]int64, []int64, error) {
	c := p.newCall(ctx, now)
	c.gets, c.adds = gets, adds
	if err := p.do(ctx, c); err != nil {
		return nil, nil, err
	}
	return c.vals, c.counts, nil
}

// value sends the value read or write op, whose key must be legal, in one
// round trip, which it may share with other calls, and sets op's answer. A
// write that fails may or may not have been applied.
func (p *pipeline) value(ctx context.Context, op *valueOp, now time.Time) error {
	c := p.newCall(ctx, now)
	c.val = op
	return p.do(ctx, c)
}

// newCall returns a call begun now on the real clock, whose caller waits
// up to the pipeline's timeout, or ctx's deadline if sooner; now dates its
// expirations.
func (p *pipeline) newCall(ctx context.Context, now time.Time) *call {
	deadline := time.Now().Add(p.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	return &call{now: now, deadline: deadline, ready: make(chan struct{}, 1)}
}

// do runs c: at once on a free connection, or in the exchange of a
// connection that comes free. A call that ctx ends while it waits in the
// queue is dropped from it, unsent.
func (p *pipeline) do(ctx context.Context, c *call) error {
	p.stats.InFlight.Add(1)
	defer p.stats.InFlight.Add(-1)
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
		return c.err
	}
	p.queue = append(p.queue, c)
	p.mu.Unlock()

	// No timer: the exchange in flight ends by its deadline, at most a
	// timeout from now, and release then fails the queued calls whose
	// deadline has passed.
	select {
	case <-c.ready:
	case <-ctx.Done():
		if err := p.abandon(c, ctx.Err()); err != nil {
			return err
		}
	}
	if c.state == leading { // set before ready, under p.mu
		p.lead(c)
	}
	return c.err
}

// abandon handles the end of the context of c, a call that waited in the
// queue, with err: a call still queued leaves it unsent and fails with
// limiter.ErrOverloaded; a carried one fails with err unless its answers
// came meanwhile; a leading one waits for its signal to lead, since the
// calls of its batch wait on it. It returns nil when c must go on.
func (p *pipeline) abandon(c *call, err error) error {
	p.mu.Lock()
	st := c.state
	if st == queued {
		p.queue = slices.DeleteFunc(p.queue, func(q *call) bool { return q == c })
	}
	p.mu.Unlock()
	switch st {
	case queued:
		p.stats.Saturated.Add(1)
		return fmt.Errorf("%w: %w", limiter.ErrOverloaded, err) // never sent
	case carried:
		select {
		case <-c.ready: // answered after all
			return nil
		default:
			// The exchange carrying the call will set its answers and
			// signal ready, which has room for it; nobody waits for them.
			return err
		}
	}
	<-c.ready // leading
	return nil
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
		if b.val != nil {
			b.val.item, b.val.ok = wire.Item{}, false
		}
	}
}

// release gives a connection whose exchange ended (nil when it failed and
// was closed) to the calls queued meanwhile: the oldest of them leads an
// exchange carrying as many of them as fit. With none queued, the
// connection goes idle.
func (p *pipeline) release(conn *pipeConn) {
	p.mu.Lock()
	if expired := p.dropExpired(); len(expired) > 0 {
		defer func() {
			p.stats.Saturated.Add(uint64(len(expired)))
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

// dropExpired removes from the queue, under p.mu, the calls whose caller
// has stopped waiting, marked carried, and returns them.
func (p *pipeline) dropExpired() []*call {
	now := time.Now()
	if len(p.queue) == 0 || p.queue[0].deadline.After(now) {
		return nil
	}
	var expired []*call
	p.queue = slices.DeleteFunc(p.queue, func(q *call) bool {
		if q.deadline.After(now) {
			return false
		}
		q.state = carried
		expired = append(expired, q)
		return true
	})
	return expired
}

// errClosedBeforeAnswer marks an exchange whose connection was closed or
// reset by the server before the first byte of an answer.
var errClosedBeforeAnswer = errors.New("connection closed by the server before any answer")

// closedBeforeAnswer reports whether err is errClosedBeforeAnswer.
func closedBeforeAnswer(err error) bool { return errors.Is(err, errClosedBeforeAnswer) }

// isClosed reports whether err says the peer closed or reset the
// connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

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
	if err == nil {
		err = c.r.Wait()
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
		err := fmt.Errorf("%w: %d bytes after the last answer: the server answered more than was asked", wire.ErrAnswer, n)
		fail(batch, err)
		return err
	}
	return nil
}

// writeCommands buffers the commands of call b: its value command, or a
// meta arithmetic command per add and then a multi-key get of its gets.
func (c *pipeConn) writeCommands(b *call) {
	if v := b.val; v != nil {
		if v.kind == valueGet {
			c.w.MetaGet(v.key)
		} else {
			c.w.MetaSet(v.key, v.value, v.version, wire.Expiration(v.ttl, b.now))
		}
		return
	}
	for _, a := range b.adds {
		c.w.Arithmetic(a.Key, a.Delta, wire.Expiration(a.TTL, b.now))
	}
	if len(b.gets) > 0 {
		c.w.Get(b.gets)
	}
}

// readAnswers reads the answers to call b's commands and sets them.
func (c *pipeConn) readAnswers(b *call) error {
	v := b.val
	if v == nil {
		return c.readCounters(b)
	}
	var err error
	if v.kind == valueGet {
		v.item, v.ok, err = c.r.MetaGet(v.key)
	} else {
		v.ok, err = c.r.MetaSet(v.version)
	}
	if err != nil {
		v.item, v.ok = wire.Item{}, false
		return err
	}
	b.err = nil
	return nil
}

// readCounters reads the answers to counter call b's commands and sets
// them.
func (c *pipeConn) readCounters(b *call) error {
	var counts []int64
	if len(b.adds) <= len(b.countBuf) {
		counts = b.countBuf[:len(b.adds)]
	} else {
		counts = make([]int64, len(b.adds))
	}
	for i, a := range b.adds {
		v, err := c.r.Arithmetic(a.Delta)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
		counts[i] = v
	}
	var vals map[string]int64 // nil, which reads as empty, without gets
	if len(b.gets) > 0 {
		vals = make(map[string]int64, len(b.gets))
		if err := c.r.Counters(b.gets, vals); err != nil {
			return err
		}
	}
	b.vals, b.counts, b.err = vals, counts, nil
	return nil
}
