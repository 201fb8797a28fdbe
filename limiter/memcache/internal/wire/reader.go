package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Reader parses the answers of one connection, in the order of the
// commands they answer. Lines are read in place, so parsing a counter
// allocates nothing. The zero value is not usable; create one with
// NewReader.
type Reader struct {
	b *bufio.Reader
}

// NewReader returns a Reader of src with a buffer of MaxLineLen bytes.
func NewReader(src io.Reader) *Reader {
	return &Reader{b: bufio.NewReaderSize(src, MaxLineLen)}
}

// Wait waits until the first byte of an answer has arrived, or reading
// fails: a connection the server closed shows here, before any answer is
// parsed.
func (r *Reader) Wait() error {
	_, err := r.b.Peek(1)
	return err
}

// Buffered returns how many bytes have been received and not parsed yet:
// after the answers to every command sent, anything left is an answer to
// no command.
func (r *Reader) Buffered() int { return r.b.Buffered() }

// Item is a value and its CAS unique, which memcached changes on every
// write of it and which is never 0.
type Item struct {
	Value []byte
	CAS   uint64
}

// Stat is one line of the answer to stats.
type Stat struct {
	Name, Value string
}

// The words of answers.
var (
	crlf       = []byte("\r\n")
	endToken   = []byte("END")   // the end of a get or stats answer
	valueToken = []byte("VALUE") // a value of a get
	statToken  = []byte("STAT")  // a line of stats
	vaToken    = []byte("VA")    // a meta answer with a value
	enToken    = []byte("EN")    // a meta get's miss
	hdToken    = []byte("HD")    // a meta set stored
	nfToken    = []byte("NF")    // not found
	nsToken    = []byte("NS")    // a meta set not stored
	exToken    = []byte("EX")    // a meta set's CAS unique no longer matches
)

// line reads one answer line to cmd without its CRLF. The line is valid
// until the next read.
func (r *Reader) line(cmd string) ([]byte, error) {
	b, err := r.b.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, malformed(cmd, "answer line longer than 4 KiB")
		}
		return nil, err
	}
	l, ok := bytes.CutSuffix(b, crlf)
	if !ok {
		return nil, malformed(cmd, "answer line %q does not end in CRLF", b)
	}
	return l, nil
}

// errIncrementNotFound is why an increment answered NF fails.
var errIncrementNotFound = fmt.Errorf("%w to ma: NF (not found) to an increment that creates a missing counter: the increment was not applied", ErrAnswer)

// Arithmetic reads the answer to Writer.Arithmetic of delta: the counter's
// new value, which is at least delta when delta is positive; or 0 for NF
// when delta is zero or negative (a read or a decrement of a missing
// counter). NF to an increment is an error: the command creates a missing
// counter, so NF there means the increment was not applied.
func (r *Reader) Arithmetic(delta int64) (int64, error) {
	l, err := r.line("ma")
	if err != nil {
		return 0, err
	}
	if bytes.Equal(l, nfToken) {
		if delta > 0 {
			return 0, errIncrementNotFound
		}
		return 0, nil
	}
	// VA <bytes>
	var buf [3][]byte
	f := fields(buf[:0], l)
	if len(f) < 2 || !bytes.Equal(f[0], vaToken) {
		return 0, answerError("ma", l)
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil || n < 1 || n > maxCounterLen {
		return 0, answerError("ma", l)
	}
	data, err := r.line("ma")
	if err != nil {
		return 0, fmt.Errorf("ma value: %w", err)
	}
	if len(data) != n {
		return 0, malformed("ma", "value %q: want %d bytes", data, n)
	}
	v, err := strconv.ParseUint(string(data), 10, 64)
	switch {
	case err != nil:
		return 0, malformed("ma", "value %q is not a counter", data)
	case v > 1<<63-1:
		return 0, malformed("ma", "value %d overflows int64", v)
	case delta > 0 && int64(v) < delta:
		return 0, malformed("ma", "value %d after an increment by %d", v, delta)
	}
	return int64(v), nil
}

// Counters reads the answer to Writer.Get of keys into vals: a VALUE block
// for each key found, then END. memcached answers a multi-key get in the
// order of its keys, and a missing key counts as zero, so a value of a key
// not asked for, or out of order, is an error (a value answered under the
// wrong key would be a count lost), as is a value that is not a counter.
func (r *Reader) Counters(keys []string, vals map[string]int64) error {
	next := 0 // the index in keys of the next key that may be answered
	for {
		l, err := r.line("get")
		if err != nil {
			return err
		}
		if bytes.Equal(l, endToken) {
			return nil
		}
		if next, err = r.counter(l, keys, next, vals); err != nil {
			return err
		}
	}
}

// counter reads the VALUE block that starts with line l, the answer for a
// key of keys[next:], into vals and returns the index after that key's.
func (r *Reader) counter(l []byte, keys []string, next int, vals map[string]int64) (int, error) {
	// VALUE <key> <flags> <bytes> [<cas>]
	var buf [5][]byte
	f := fields(buf[:0], l)
	if len(f) < 4 || !bytes.Equal(f[0], valueToken) {
		return 0, answerError("get", l)
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil || n < 0 || n > maxCounterLen {
		// A counter has at most 20 digits; anything longer was not
		// written by floodgate.
		return 0, answerError("get", l)
	}
	i := next
	for i < len(keys) && keys[i] != string(f[1]) { // compared without allocating
		i++
	}
	if i == len(keys) {
		return 0, malformed("get", "value of %q, which is not asked for or comes out of order", f[1])
	}
	key := keys[i]
	data, err := r.line("get")
	if err != nil {
		return 0, fmt.Errorf("value of %q: %w", key, err)
	}
	if len(data) != n {
		return 0, malformed("get", "value of %q: %d bytes, want %d", key, len(data), n)
	}
	// memcached pads a value with spaces when a decrement shortens it.
	v, err := strconv.ParseInt(string(bytes.TrimRight(data, " ")), 10, 64)
	if err != nil || v < 0 {
		return 0, malformed("get", "%q: value %q is not a counter", key, data)
	}
	vals[key] = v
	return i + 1, nil
}

// MetaGet reads the answer to Writer.MetaGet of key: the item and true, or
// false for EN (not found). The answer must carry the key, which must be
// key, and a non-zero CAS unique (memcached started with -C, CAS disabled,
// gives 0, and a value without a version cannot be swapped safely); any
// other flag, or a value longer than MaxValueLen, is an error. The value is
// the caller's.
func (r *Reader) MetaGet(key string) (Item, bool, error) {
	l, err := r.line("mg")
	if err != nil {
		return Item{}, false, err
	}
	// EN [k<key>] | VA <bytes> c<cas> k<key>, flags in any order
	var buf [5][]byte
	f := fields(buf[:0], l)
	switch {
	case len(f) >= 1 && bytes.Equal(f[0], enToken):
		return Item{}, false, checkMetaFlags(l, f[1:], key, false)
	case len(f) < 2 || !bytes.Equal(f[0], vaToken):
		return Item{}, false, answerError("mg", l)
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil || n < 0 || n > MaxValueLen {
		return Item{}, false, answerError("mg", l)
	}
	if err := checkMetaFlags(l, f[2:], key, true); err != nil {
		return Item{}, false, err
	}
	cas := casFlag(f[2:])
	data := make([]byte, n+len(crlf))
	if _, err := io.ReadFull(r.b, data); err != nil {
		return Item{}, false, fmt.Errorf("value of %q: %w", key, err)
	}
	if !bytes.Equal(data[n:], crlf) {
		return Item{}, false, malformed("mg", "value of %q is longer than the %d bytes announced", key, n)
	}
	return Item{Value: data[:n:n], CAS: cas}, true, nil
}

// checkMetaFlags checks the flags of the mg answer line l: k<key> where the
// key must be key, and with found c<cas>, a non-zero number; each once, both
// present when found, and no other.
func checkMetaFlags(l []byte, flags [][]byte, key string, found bool) error {
	if len(flags) > 2 {
		return answerError("mg", l)
	}
	var haveKey, haveCAS bool
	for _, fl := range flags {
		switch {
		case fl[0] == 'k' && !haveKey:
			if string(fl[1:]) != key {
				return malformed("mg", "the value of %q, asked for %q", fl[1:], key)
			}
			haveKey = true
		case fl[0] == 'c' && found && !haveCAS:
			cas, err := strconv.ParseUint(string(fl[1:]), 10, 64)
			if err != nil {
				return answerError("mg", l)
			}
			if cas == 0 {
				return malformed("mg", "no CAS unique (c0): memcached runs with CAS disabled (-C)")
			}
			haveCAS = true
		default:
			return answerError("mg", l)
		}
	}
	if found && (!haveKey || !haveCAS) {
		return answerError("mg", l)
	}
	return nil
}

// casFlag returns the number of the c flag among flags, which
// checkMetaFlags has checked.
func casFlag(flags [][]byte) uint64 {
	for _, fl := range flags {
		if fl[0] == 'c' {
			cas, _ := strconv.ParseUint(string(fl[1:]), 10, 64)
			return cas
		}
	}
	return 0
}

// MetaSet reads the answer to Writer.MetaSet with cas: true for HD
// (stored), false for the refusals memcached gives to that mode, NS (not
// stored: the key exists) to an add (cas 0), EX (the item was written
// since) or NF (it expired or was evicted since) to a compare-and-swap.
// Any other answer, such as NF to an add, is an error.
func (r *Reader) MetaSet(cas uint64) (bool, error) {
	l, err := r.line("ms")
	if err != nil {
		return false, err
	}
	switch {
	case bytes.Equal(l, hdToken):
		return true, nil
	case cas == 0 && bytes.Equal(l, nsToken):
		return false, nil
	case cas != 0 && (bytes.Equal(l, exToken) || bytes.Equal(l, nfToken)):
		return false, nil
	}
	return false, answerError("ms", l)
}

// Stats reads the answer to Writer.Stats: "STAT <name> <value>" lines up
// to END, at most maxLines of them. Any other line is an error.
func (r *Reader) Stats(maxLines int) ([]Stat, error) {
	var out []Stat
	for range maxLines {
		l, err := r.line("stats")
		if err != nil {
			return nil, err
		}
		if bytes.Equal(l, endToken) {
			return out, nil
		}
		// A value is one field; should one hold spaces, it is cut at
		// the first (the stats floodgate reads are numbers).
		var buf [3][]byte
		f := fields(buf[:0], l)
		if len(f) != 3 || !bytes.Equal(f[0], statToken) {
			return nil, answerError("stats", l)
		}
		out = append(out, Stat{Name: string(f[1]), Value: string(f[2])})
	}
	return nil, malformed("stats", "no END within %d lines", maxLines)
}

// fields appends to dst the fields of l, split at runs of spaces, up to
// dst's capacity, and returns it. The fields share l's bytes, and nothing is
// allocated when dst is backed by the caller's array.
func fields(dst [][]byte, l []byte) [][]byte {
	for len(l) > 0 && len(dst) < cap(dst) {
		l = bytes.TrimLeft(l, " ")
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
