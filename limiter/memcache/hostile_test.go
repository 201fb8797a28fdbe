package memcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Answers of a well-behaved memcached to the commands the hostile tests
// send: every increment by 1 creates its counter, and no key is found.
const (
	goodMA  = "VA 1\r\n1\r\n"
	goodGet = "END\r\n"
)

// hostileMemcached is a fake memcached on a free loopback port. It answers
// the commands of verb ("ma", "mg", "ms", or "get" for get and gets) with
// answer, and
// the others as a good server would (goodMA, goodGet, else ERROR). With
// closeAfter, it closes the connection right after answer, which may be
// empty: a connection closed unanswered.
type hostileMemcached struct {
	ln           net.Listener
	verb, answer string
	closeAfter   bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// startHostile starts a hostileMemcached that t's cleanup stops, and
// returns its address.
func startHostile(t *testing.T, verb, answer string, closeAfter bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileMemcached{ln: ln, verb: verb, answer: answer, closeAfter: closeAfter}
	h.wg.Go(h.accept)
	t.Cleanup(h.stop)
	return ln.Addr().String()
}

func (h *hostileMemcached) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return // stopped
		}
		h.mu.Lock()
		h.conns = append(h.conns, c)
		h.mu.Unlock()
		h.wg.Go(func() { h.serve(c) })
	}
}

// serve answers the commands of one connection, one line at a time.
func (h *hostileMemcached) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		if verb == "gets" {
			verb = "get"
		}
		answer := "ERROR\r\n"
		switch {
		case verb == h.verb:
			answer = h.answer
		case verb == "ma":
			answer = goodMA
		case verb == "get":
			answer = goodGet
		}
		if _, err := c.Write([]byte(answer)); err != nil || (verb == h.verb && h.closeAfter) {
			return
		}
	}
}

func (h *hostileMemcached) stop() {
	h.ln.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// The keys of the hostile tests: a decision's reads and increments.
var (
	hostileGets = []string{"fg1:h:0", "fg1:h:1"}
	hostileAdds = []limiter.Increment{{Key: "fg1:h:1", Delta: 1, TTL: time.Minute}, {Key: "fg1:h:m1", Delta: 1, TTL: time.Minute}}
)

// TestHostileAnswers checks that every answer a memcached should not give
// fails Add, Batch and Get with limiter.ErrStoreUnavailable, at once (not
// by the timeout) and without a count: an answer misread as zero would
// let a requestor through uncounted.
func TestHostileAnswers(t *testing.T) {
	const vaLine = "VA 2\r\n" // the start of an answer
	tests := []struct {
		name   string
		verb   string // the command answered: "ma", or "get" for get and gets
		answer string
		close  bool // close the connection after answer
	}{
		{name: "NF to an increment", verb: "ma", answer: "NF\r\n"},
		{name: "EN to ma", verb: "ma", answer: "EN\r\n"},
		{name: "NS to ma", verb: "ma", answer: "NS\r\n"},
		{name: "EX to ma", verb: "ma", answer: "EX\r\n"},
		{name: "HD to ma (no value)", verb: "ma", answer: "HD\r\n"},
		{name: "SERVER_ERROR to ma", verb: "ma", answer: "SERVER_ERROR out of memory storing object\r\n"},
		{name: "CLIENT_ERROR to ma", verb: "ma", answer: "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},
		{name: "ERROR to ma", verb: "ma", answer: "ERROR\r\n"},
		{name: "garbage to ma", verb: "ma", answer: "garbage\r\n"},
		{name: "binary garbage to ma", verb: "ma", answer: "\x00\xff\xfe\r\n"},
		{name: "VA without a size", verb: "ma", answer: "VA\r\n1\r\n"},
		{name: "VA with a size that is no number", verb: "ma", answer: "VA x\r\n1\r\n"},
		{name: "VA of size 0", verb: "ma", answer: "VA 0\r\n\r\n"},
		{name: "ma value longer than announced", verb: "ma", answer: "VA 1\r\n12\r\n"},
		{name: "ma value shorter than announced", verb: "ma", answer: "VA 3\r\n12\r\n"},
		{name: "negative ma value", verb: "ma", answer: "VA 2\r\n-4\r\n"},
		{name: "non-numeric ma value", verb: "ma", answer: "VA 3\r\nabc\r\n"},
		{name: "ma value over int64", verb: "ma", answer: "VA 19\r\n9223372036854775808\r\n"},
		{name: "ma value over uint64", verb: "ma", answer: "VA 20\r\n18446744073709551616\r\n"},
		{name: "ma value below the increment", verb: "ma", answer: "VA 1\r\n0\r\n"},
		{name: "ma answer without CR", verb: "ma", answer: "VA 1\n1\n"},
		{name: "ma answer line over 4 KiB", verb: "ma", answer: "VA " + strings.Repeat("9", 5000), close: true},
		{name: "two answers to one ma", verb: "ma", answer: goodMA + goodMA},
		{name: "closed before the ma answer", verb: "ma", answer: "", close: true},
		{name: "closed after the VA line", verb: "ma", answer: vaLine, close: true},
		{name: "closed in the ma value", verb: "ma", answer: vaLine + "4", close: true},

		{name: "NF to get", verb: "get", answer: "NF\r\n"},
		{name: "EN to get", verb: "get", answer: "EN\r\n"},
		{name: "SERVER_ERROR to get", verb: "get", answer: "SERVER_ERROR busy\r\n"},
		{name: "CLIENT_ERROR to get", verb: "get", answer: "CLIENT_ERROR line too long\r\n"},
		{name: "ERROR to get", verb: "get", answer: "ERROR\r\n"},
		{name: "garbage to get", verb: "get", answer: "garbage\r\n"},
		{name: "END without CR", verb: "get", answer: "END\n"},
		{name: "VALUE with too few fields", verb: "get", answer: "VALUE fg1:h:0 0\r\n1\r\nEND\r\n"},
		{name: "VALUE with a size that is no number", verb: "get", answer: "VALUE fg1:h:0 0 x\r\n1\r\nEND\r\n"},
		{name: "value of a key not asked for", verb: "get", answer: "VALUE fg1:other:1 0 1\r\n5\r\nEND\r\n"},
		{name: "values out of order", verb: "get", answer: "VALUE fg1:h:1 0 1\r\n5\r\nVALUE fg1:h:0 0 1\r\n5\r\nEND\r\n"},
		{name: "a key answered twice", verb: "get", answer: "VALUE fg1:h:1 0 1\r\n5\r\nVALUE fg1:h:1 0 1\r\n0\r\nEND\r\n"},
		{name: "get value longer than announced", verb: "get", answer: "VALUE fg1:h:0 0 1\r\n42\r\nEND\r\n"},
		{name: "get value shorter than announced", verb: "get", answer: "VALUE fg1:h:0 0 3\r\n42\r\nEND\r\n"},
		{name: "negative get value", verb: "get", answer: "VALUE fg1:h:0 0 2\r\n-4\r\nEND\r\n"},
		{name: "non-numeric get value", verb: "get", answer: "VALUE fg1:h:0 0 3\r\nabc\r\nEND\r\n"},
		{name: "empty get value", verb: "get", answer: "VALUE fg1:h:0 0 0\r\n\r\nEND\r\n"},
		{name: "get value over int64", verb: "get", answer: "VALUE fg1:h:0 0 19\r\n9223372036854775808\r\nEND\r\n"},
		{name: "get value of 4 GiB announced", verb: "get", answer: "VALUE fg1:h:0 0 4294967295\r\n", close: true},
		{name: "answer after END", verb: "get", answer: "VALUE fg1:h:0 0 1\r\n5\r\nEND\r\nEND\r\n"},
		{name: "closed before the get answer", verb: "get", answer: "", close: true},
		{name: "closed before END", verb: "get", answer: "VALUE fg1:h:0 0 1\r\n5\r\n", close: true},
		{name: "closed in the get value", verb: "get", answer: "VALUE fg1:h:0 0 2\r\n5", close: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, []string{startHostile(t, tc.verb, tc.answer, tc.close)}, Config{Timeout: generous})
			ctx := context.Background()
			if tc.verb == "ma" {
				n, err := s.Add(ctx, hostileAdds[0].Key, 1, time.Minute)
				wantHostileError(t, "Add", err)
				if n != 0 {
					t.Errorf("Add = %d with an error, want 0", n)
				}
			}
			vals, counts, err := s.Batch(ctx, hostileGets, hostileAdds)
			wantHostileError(t, "Batch", err)
			if vals != nil || counts != nil {
				t.Errorf("Batch = %v, %v with an error, want nothing", vals, counts)
			}
			if tc.verb == "get" {
				vals, err := s.Get(ctx, hostileGets)
				wantHostileError(t, "Get", err)
				if vals != nil {
					t.Errorf("Get = %v with an error, want nothing", vals)
				}
			}
		})
	}
}

// wantHostileError fails t unless err wraps limiter.ErrStoreUnavailable and
// is not a timeout: the answer itself must have been refused.
func wantHostileError(t *testing.T, what string, err error) {
	t.Helper()
	if wrapsUnavailable(t, what, err) && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%s: error %q is the timeout, want the answer refused at once", what, err)
	}
}

// TestHostileLegitimateAnswers checks the fake's good answers, and the
// answers that are legitimate only for some commands: NF to a read (delta
// 0) or to a decrement of a missing counter is zero, and values come in
// the order asked, padded by memcached after a decrement.
func TestHostileLegitimateAnswers(t *testing.T) {
	ctx := context.Background()
	good := newStore(t, []string{startHostile(t, "", "", false)}, Config{Timeout: generous})
	vals, counts, err := good.Batch(ctx, hostileGets, hostileAdds)
	if err != nil || len(vals) != 0 || !slices.Equal(counts, []int64{1, 1}) {
		t.Fatalf("Batch on a good fake = %v, %v, %v; want nothing read and counts [1 1]", vals, counts, err)
	}

	nf := newStore(t, []string{startHostile(t, "ma", "NF\r\n", false)}, Config{Timeout: generous})
	for _, delta := range []int64{0, -1} {
		if n, err := nf.Add(ctx, "fg1:h:1", delta, time.Minute); err != nil || n != 0 {
			t.Errorf("Add(%d) answered NF = %d, %v; want 0, nil", delta, n, err)
		}
	}

	values := "VALUE fg1:h:0 0 1\r\n3\r\nVALUE fg1:h:1 0 2\r\n4 \r\nEND\r\n"
	vs := newStore(t, []string{startHostile(t, "get", values, false)}, Config{Timeout: generous})
	want := map[string]int64{"fg1:h:0": 3, "fg1:h:1": 4}
	if got, err := vs.Get(ctx, hostileGets); err != nil || !maps.Equal(got, want) {
		t.Errorf("Get = %v, %v; want %v", got, err, want)
	}
	if got, counts, err := vs.Batch(ctx, hostileGets, hostileAdds); err != nil || !maps.Equal(got, want) || !slices.Equal(counts, []int64{1, 1}) {
		t.Errorf("Batch = %v, %v, %v; want %v and counts [1 1]", got, counts, err, want)
	}

	// Values: a miss with or without the key (memcached 1.6.18 repeats
	// it), a hit with its flags in any order, and a write stored.
	for answer, want := range map[string]string{
		"EN\r\n":                           " 0",
		"EN kfg1:v:1\r\n":                  " 0",
		"VA 2 c9 kfg1:v:1\r\nhi\r\n":       "hi 9",
		"VA 4 kfg1:v:1 c9\r\n\r\n\r\n\r\n": "\r\n\r\n 9",
		"VA 0 c1 kfg1:v:1\r\n\r\n":         " 1",
	} {
		s := newStore(t, []string{startHostile(t, "mg", answer, false)}, Config{Timeout: generous})
		v, ver, err := s.GetVersioned(ctx, "fg1:v:1")
		if got := fmt.Sprint(string(v), " ", ver); err != nil || got != want {
			t.Errorf("GetVersioned answered %q = %q, %v; want %q", answer, got, err, want)
		}
	}
	for _, version := range []uint64{0, 7} {
		s := newStore(t, []string{startHostile(t, "ms", "HD\r\n", true)}, Config{Timeout: generous})
		if ok, err := s.CompareAndSwap(ctx, "fg1:v:1", []byte("x"), version, time.Minute); err != nil || !ok {
			t.Errorf("CompareAndSwap(version %d) answered HD = %v, %v; want true", version, ok, err)
		}
	}
}

// TestHostileValueAnswers checks the value methods, on meta commands:
// a value of another key, and answers that memcached gives to another
// command or to the other mode of ms only, are errors; the refusals
// memcached does give are false without an error.
func TestHostileValueAnswers(t *testing.T) {
	ctx := context.Background()
	const key = "fg1:v:1"
	for _, answer := range []string{
		"VA 1 c7 kfg1:other:1\r\nx\r\n",       // a value of another key
		"EN kfg1:other:1\r\n",                 // a miss of another key
		"VA 1 c7\r\nx\r\n",                    // no key
		"VA 1 kfg1:v:1\r\nx\r\n",              // no CAS unique
		"VA 1 c0 kfg1:v:1\r\nx\r\n",           // CAS disabled (-C)
		"VA 1 cx kfg1:v:1\r\nx\r\n",           // a CAS unique that is no number
		"VA 1 c7 kfg1:v:1 t60\r\nx\r\n",       // a flag not asked for
		"VA 1 c7 c8 kfg1:v:1\r\nx\r\n",        // a flag twice
		"VA 2 c7 kfg1:v:1\r\nx\r\n",           // shorter than announced
		"VA 1 c7 kfg1:v:1\r\nxy\r\n",          // longer than announced
		"VA 65537 c7 kfg1:v:1\r\n",            // over 64 KiB
		"VA -1 c7 kfg1:v:1\r\n\r\n",           // a negative size
		"VALUE fg1:v:1 0 1 7\r\nx\r\nEND\r\n", // gets' answer
		"NF\r\n", "HD\r\n", "NS\r\n", "EX\r\n", "END\r\n",
		"SERVER_ERROR out of memory\r\n", "CLIENT_ERROR bad command line format\r\n", "ERROR\r\n", "garbage\r\n",
	} {
		t.Run("mg answered "+strings.TrimSpace(answer), func(t *testing.T) {
			s := newStore(t, []string{startHostile(t, "mg", answer, true)}, Config{Timeout: generous})
			v, ver, err := s.GetVersioned(ctx, key)
			wantHostileError(t, "GetVersioned", err)
			if v != nil || ver != 0 {
				t.Errorf("GetVersioned = %q, %d with an error, want nothing", v, ver)
			}
		})
	}

	tests := []struct {
		mode    string // "add" for version 0, else "cas"
		answer  string
		wantErr bool
	}{
		{"add", "NS\r\n", false},
		{"add", "NF\r\n", true},
		{"add", "EX\r\n", true},
		{"add", "NOT_STORED\r\n", true},
		{"add", "SERVER_ERROR out of memory storing object\r\n", true},
		{"add", "garbage\r\n", true},
		{"cas", "EX\r\n", false},
		{"cas", "NF\r\n", false},
		{"cas", "NS\r\n", true},
		{"cas", "EXISTS\r\n", true},
		{"cas", "HD c8\r\n", true},
		{"cas", "ERROR\r\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.mode+" answered "+strings.TrimSpace(tc.answer), func(t *testing.T) {
			// Closed after the answer: the fake would take the value
			// that follows the command for a command of its own.
			s := newStore(t, []string{startHostile(t, "ms", tc.answer, true)}, Config{Timeout: generous})
			version := uint64(0)
			if tc.mode == "cas" {
				version = 7
			}
			ok, err := s.CompareAndSwap(ctx, key, []byte("x"), version, time.Minute)
			if tc.wantErr {
				wantHostileError(t, "CompareAndSwap", err)
			} else if err != nil {
				t.Errorf("CompareAndSwap = %v, %v; want false, nil", ok, err)
			}
			if ok {
				t.Error("CompareAndSwap reports a write stored")
			}
		})
	}
}
