package memcache

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache/internal/wire"
)

// answerConn is a net.Conn whose peer says answer: reads come from it,
// writes are discarded. The pipeline uses no other method.
type answerConn struct {
	net.Conn
	answer io.Reader
}

func (c answerConn) Read(p []byte) (int, error)       { return c.answer.Read(p) }
func (c answerConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c answerConn) SetDeadline(time.Time) error      { return nil }
func (c answerConn) Close() error                     { return nil }
func (c answerConn) SetReadDeadline(time.Time) error  { return nil }
func (c answerConn) SetWriteDeadline(time.Time) error { return nil }
func (c answerConn) LocalAddr() net.Addr              { return nil }
func (c answerConn) RemoteAddr() net.Addr             { return nil }

// fuzzBatch returns the calls of one exchange that FuzzAnswers answers: a
// decision (reads, then an increment of a second and of its minute), a
// value read, a read and a decrement, a value swap, and a read alone.
func fuzzBatch() []*call {
	inc := func(key string, delta int64) limiter.Increment {
		return limiter.Increment{Key: key, Delta: delta, TTL: time.Minute}
	}
	return []*call{
		{gets: []string{"fg1:a:0", "fg1:a:1"}, adds: []limiter.Increment{inc("fg1:a:1", 1), inc("fg1:a:m1", 3)}},
		{val: &valueOp{kind: valueGet, key: "fg1:v:1"}},
		{adds: []limiter.Increment{inc("fg1:b:1", 0), inc("fg1:b:1", -2)}},
		{val: &valueOp{kind: valueSwap, key: "fg1:v:2", value: []byte("a\r\nVA 1\r\n"), version: 7, ttl: time.Minute}},
		{gets: []string{"fg1:c:0", "fg1:c:0", "fg1:c:1"}},
	}
}

// FuzzAnswers feeds arbitrary bytes to the pipeline as memcached's answer to
// a known exchange (fuzzBatch) and checks that it never panics and that
// every call it reports answered is consistent with its commands: a count
// per increment, at least the delta of a positive one and never negative,
// only values of keys asked for, never negative, and a value read with a
// version; a call that failed has no answer. The answers themselves are
// fuzzed in package wire (FuzzReader); this checks how an exchange hands
// them out.
func FuzzAnswers(f *testing.F) {
	good := "VA 1\r\n1\r\nVA 1\r\n3\r\nVALUE fg1:a:1 0 1\r\n1\r\nEND\r\n" +
		"VA 2 c9 kfg1:v:1\r\nhi\r\n" +
		"NF\r\nVA 1\r\n0\r\n" +
		"EX\r\n" +
		"VALUE fg1:c:0 0 2\r\n7 \r\nVALUE fg1:c:0 0 2\r\n7 \r\nVALUE fg1:c:1 5 1 99\r\n2\r\nEND\r\n"
	for _, seed := range []string{
		good,
		"NF\r\nNF\r\nEND\r\nEN\r\nNF\r\nNF\r\nHD\r\nEND\r\n",
		"VA 1\r\n1\r\nVA 1\r\n0\r\nEND\r\n",
		"VA 1\r\n1\r\nVA 1\r\n3\r\nVALUE fg1:x:1 0 1\r\n1\r\nEND\r\n",
		"VA 1\r\n1\r\nVA 1\r\n3\r\nEND\r\nVA 2 c9 kfg1:v:9\r\nhi\r\n",
		"SERVER_ERROR out of memory\r\n",
		"VA 20\r\n18446744073709551615\r\n",
		good + "END\r\n",
		good[:len(good)-3],
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		batch := fuzzBatch()
		for _, b := range batch {
			b.now = time.Unix(1800000000, 0)
		}
		c := newPipeConn(answerConn{answer: bytes.NewReader(answer)})
		err := c.exchange(time.Time{}, batch)
		for i, b := range batch {
			checkFuzzedCall(t, i, b)
		}
		if bytes.Equal(answer, []byte(good)) {
			got := fmt.Sprintln(err, batch[0].vals, batch[0].counts, string(batch[1].val.item.Value), batch[1].val.item.CAS,
				batch[2].counts, batch[3].val.ok, batch[4].vals)
			if want := "<nil> map[fg1:a:1:1] [1 3] hi 9 [0 0] false map[fg1:c:0:7 fg1:c:1:2]\n"; got != want {
				t.Fatalf("the good answer reads as %s, want %s", got, want)
			}
		}
		if err == nil && batch[len(batch)-1].err != nil {
			t.Fatalf("the exchange succeeded but its last call failed: %v", batch[len(batch)-1].err)
		}
		if err != nil && batch[len(batch)-1].err == nil {
			t.Fatalf("the exchange failed (%v) but its last call did not", err)
		}
	})
}

// checkFuzzedCall fails t unless call i of an exchange, b, has answers
// consistent with its commands, or none when it failed.
func checkFuzzedCall(t *testing.T, i int, b *call) {
	t.Helper()
	if b.err != nil {
		if b.vals != nil || b.counts != nil || b.val != nil && (b.val.ok || b.val.item.Value != nil) {
			t.Fatalf("call %d failed (%v) with answers %v %v %+v", i, b.err, b.vals, b.counts, b.val)
		}
		return
	}
	if b.val != nil && b.val.kind == valueGet && b.val.ok && (b.val.item.CAS == 0 || len(b.val.item.Value) > wire.MaxValueLen) {
		t.Fatalf("call %d: value read %+v", i, b.val.item)
	}
	if len(b.counts) != len(b.adds) {
		t.Fatalf("call %d: %d counts for %d increments", i, len(b.counts), len(b.adds))
	}
	for j, a := range b.adds {
		if n := b.counts[j]; n < 0 || (a.Delta > 0 && n < a.Delta) {
			t.Fatalf("call %d: count %d after adding %d to %s", i, n, a.Delta, a.Key)
		}
	}
	if len(b.vals) > len(b.gets) {
		t.Fatalf("call %d: %d values for %d keys", i, len(b.vals), len(b.gets))
	}
	for k, v := range b.vals {
		if !slices.Contains(b.gets, k) || v < 0 {
			t.Fatalf("call %d: value %s=%d, keys asked %q", i, k, v, b.gets)
		}
	}
}
