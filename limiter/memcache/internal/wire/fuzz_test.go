package wire

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// FuzzReader feeds arbitrary bytes to every parser of the Reader, as the
// answer to the command it parses, and checks that none panics, that every
// error is an answer error or the reader's own (the answer cut short), and
// that every result is one the command can have: a count at least the
// increment and never negative, values only of keys asked for and never
// negative, a value no longer than MaxValueLen with a non-zero CAS unique,
// stats at most as many as asked, and a write reported stored only for HD.
func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		"VA 1\r\n1\r\n", "VA 2\r\n42\r\n", "NF\r\n", "VA 20\r\n18446744073709551615\r\n",
		"VALUE k:0 0 1\r\n3\r\nVALUE k:1 5 2 99\r\n4 \r\nEND\r\n", "VALUE k:9 0 1\r\n5\r\nEND\r\n",
		"EN\r\n", "EN kk:0\r\n", "VA 2 c9 kk:0\r\nhi\r\n", "VA 2 kk:0 c9\r\nhi\r\n", "VA 1 c0 kk:0\r\nx\r\n",
		"HD\r\n", "NS\r\n", "EX\r\n", "STAT pid 7\r\nSTAT bytes 100\r\nEND\r\n",
		"SERVER_ERROR out of memory\r\n", "VA 1\n1\n", "",
	} {
		for _, delta := range []int64{1, 0, -1} {
			f.Add([]byte(seed), delta, uint64(delta+1))
		}
	}
	keys := []string{"k:0", "k:1", "k:1"}
	f.Fuzz(func(t *testing.T, answer []byte, delta int64, cas uint64) {
		r := func() *Reader { return NewReader(bytes.NewReader(answer)) }

		n, err := r().Arithmetic(delta)
		checkError(t, "Arithmetic", err)
		if err == nil && (n < 0 || delta > 0 && n < delta) {
			t.Fatalf("Arithmetic(%d) = %d", delta, n)
		}

		vals := map[string]int64{}
		err = r().Counters(keys, vals)
		checkError(t, "Counters", err)
		for k, v := range vals {
			if !slices.Contains(keys, k) || v < 0 {
				t.Fatalf("Counters: %s=%d, keys asked %q", k, v, keys)
			}
		}

		item, found, err := r().MetaGet(keys[0])
		checkError(t, "MetaGet", err)
		if found && (err != nil || item.CAS == 0 || len(item.Value) > MaxValueLen) {
			t.Fatalf("MetaGet = %+v, %v, %v", item, found, err)
		}

		stored, err := r().MetaSet(cas)
		checkError(t, "MetaSet", err)
		if stored && !bytes.HasPrefix(answer, []byte("HD\r\n")) {
			t.Fatalf("MetaSet(%d) of %q reports a write stored", cas, answer)
		}

		stats, err := r().Stats(4)
		checkError(t, "Stats", err)
		if len(stats) > 4 {
			t.Fatalf("Stats(4) = %d stats", len(stats))
		}
	})
}

// checkError fails t unless err is nil, an answer error, or the end of the
// answer.
func checkError(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrAnswer) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s: error %v is neither an answer error nor the end of the answer", what, err)
	}
}
