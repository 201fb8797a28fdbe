package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// reader returns a Reader of answer.
func reader(answer string) *Reader { return NewReader(strings.NewReader(answer)) }

// wantAnswerError fails t unless err wraps ErrAnswer.
func wantAnswerError(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrAnswer) {
		t.Errorf("%s: error %v, want one wrapping ErrAnswer", what, err)
	}
}

func TestWriter(t *testing.T) {
	now := time.Unix(1_780_000_000, 0)
	tests := []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"increment", func(w *Writer) { w.Arithmetic("fg1:a:1", 3, Expiration(time.Minute, now)) }, "ma fg1:a:1 N60 J3 D3 v\r\n"},
		{"read", func(w *Writer) { w.Arithmetic("fg1:a:1", 0, 60) }, "ma fg1:a:1 D0 v\r\n"},
		{"decrement", func(w *Writer) { w.Arithmetic("fg1:a:1", -2, 60) }, "ma fg1:a:1 MD D2 v\r\n"},
		{"decrement by the least int64", func(w *Writer) { w.Arithmetic("k", math.MinInt64, 60) }, "ma k MD D9223372036854775808 v\r\n"},
		{"increment past 30 days", func(w *Writer) { w.Arithmetic("k", 1, Expiration(40*24*time.Hour, now)) }, "ma k N1783456000 J1 D1 v\r\n"},
		{"get", func(w *Writer) { w.Get([]string{"a:1", "a:2"}) }, "get a:1 a:2\r\n"},
		{"meta get", func(w *Writer) { w.MetaGet("fg1:v:1") }, "mg fg1:v:1 v c k\r\n"},
		{"add", func(w *Writer) { w.MetaSet("fg1:v:1", []byte("x\r\nEND\r\n"), 0, 60) }, "ms fg1:v:1 8 T60 ME\r\nx\r\nEND\r\n\r\n"},
		{"compare and swap", func(w *Writer) { w.MetaSet("k", []byte{}, math.MaxUint64, 1) }, "ms k 0 T1 C18446744073709551615\r\n\r\n"},
		{"stats", func(w *Writer) { w.Stats() }, "stats\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, 16) // smaller than most commands
			tc.write(w)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tc.want {
				t.Errorf("wrote %q, want %q", got, tc.want)
			}
		})
	}
}

// flakyWriter fails its first write, then keeps what it is given.
type flakyWriter struct {
	failed bool
	bytes.Buffer
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("broken pipe")
	}
	return f.Buffer.Write(p)
}

// TestWriterAfterError checks that a failed Flush drops what was not
// written, so that the next commands go out alone.
func TestWriterAfterError(t *testing.T) {
	var dst flakyWriter
	w := NewWriter(&dst, 64)
	w.Stats()
	if err := w.Flush(); err == nil {
		t.Fatal("the failed Flush reported no error")
	}
	w.MetaGet("k")
	if err := w.Flush(); err != nil || dst.String() != "mg k v c k\r\n" {
		t.Fatalf("after the error: wrote %q, %v; want only the meta get", dst.String(), err)
	}
}

func TestArithmetic(t *testing.T) {
	tests := []struct {
		answer  string
		delta   int64
		want    int64
		wantErr bool // an error wrapping ErrAnswer
	}{
		{"VA 1\r\n1\r\n", 1, 1, false},
		{"VA 2\r\n42\r\n", 3, 42, false},
		{"VA 19\r\n9223372036854775807\r\n", 1, math.MaxInt64, false},
		{"VA 1\r\n0\r\n", -1, 0, false},
		{"VA 1\r\n0\r\n", 0, 0, false},
		{"NF\r\n", 0, 0, false},
		{"NF\r\n", -5, 0, false},
		{"VA 2 t\r\n42\r\n", 1, 42, false}, // a flag is not a value

		{"NF\r\n", 1, 0, true},
		{"VA 1\r\n0\r\n", 1, 0, true},
		{"VA 19\r\n9223372036854775808\r\n", 1, 0, true},
		{"VA 20\r\n18446744073709551616\r\n", 1, 0, true},
		{"VA 2\r\n-4\r\n", 0, 0, true},
		{"VA 3\r\nabc\r\n", 0, 0, true},
		{"VA 1\r\n12\r\n", 1, 0, true},
		{"VA 3\r\n12\r\n", 1, 0, true},
		{"VA 0\r\n\r\n", 0, 0, true},
		{"VA 21\r\n123456789012345678901\r\n", 1, 0, true},
		{"VA\r\n1\r\n", 1, 0, true},
		{"VA x\r\n1\r\n", 1, 0, true},
		{"HD\r\n", 1, 0, true},
		{"EN\r\n", 0, 0, true},
		{"NS\r\n", 1, 0, true},
		{"EX\r\n", 1, 0, true},
		{"SERVER_ERROR out of memory\r\n", 1, 0, true},
		{"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", 1, 0, true},
		{"VA 1\n1\n", 1, 0, true},
		{"VA " + strings.Repeat("9", MaxLineLen) + "\r\n", 1, 0, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q by %d", tc.answer, tc.delta), func(t *testing.T) {
			got, err := reader(tc.answer).Arithmetic(tc.delta)
			if tc.wantErr {
				wantAnswerError(t, "Arithmetic", err)
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Arithmetic = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestTruncatedAnswers checks that an answer cut short is the reader's
// error, io.EOF or io.ErrUnexpectedEOF, not a result.
func TestTruncatedAnswers(t *testing.T) {
	for _, answer := range []string{"", "VA 2\r\n", "VA 2\r\n4", "VA 1 c1 kk\r\nx", "VA 1 c1 kk\r\n", "VALUE k 0 1\r\n", "VALUE k 0 1\r\n1\r\n", "STAT bytes 1\r\n"} {
		r := func() *Reader { return reader(answer) }
		errs := map[string]error{}
		_, errs["Arithmetic"] = r().Arithmetic(1)
		errs["Counters"] = r().Counters([]string{"k"}, map[string]int64{})
		_, _, errs["MetaGet"] = r().MetaGet("k")
		_, errs["MetaSet"] = r().MetaSet(0)
		_, errs["Stats"] = r().Stats(10)
		for what, err := range errs {
			if !errors.Is(err, ErrAnswer) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s of %q: %v, want EOF or an answer error", what, answer, err)
			}
			if err == nil {
				t.Errorf("%s of %q: no error", what, answer)
			}
		}
	}
}

func TestCounters(t *testing.T) {
	keys := []string{"k:0", "k:1", "k:1", "k:2"}
	tests := []struct {
		name, answer string
		want         map[string]int64
		wantErr      bool
	}{
		{"none found", "END\r\n", map[string]int64{}, false},
		{"in order, padded after a decrement, with flags and cas", "VALUE k:0 0 1\r\n3\r\nVALUE k:1 5 2 99\r\n4 \r\nVALUE k:1 0 2\r\n4 \r\nEND\r\n", map[string]int64{"k:0": 3, "k:1": 4}, false},
		{"skipping keys", "VALUE k:2 0 1\r\n7\r\nEND\r\n", map[string]int64{"k:2": 7}, false},

		{"a key not asked for", "VALUE k:9 0 1\r\n5\r\nEND\r\n", nil, true},
		{"out of order", "VALUE k:2 0 1\r\n5\r\nVALUE k:0 0 1\r\n5\r\nEND\r\n", nil, true},
		{"a key answered more often than asked", "VALUE k:1 0 1\r\n5\r\nVALUE k:1 0 1\r\n5\r\nVALUE k:1 0 1\r\n5\r\nEND\r\n", nil, true},
		{"too few fields", "VALUE k:0 0\r\n1\r\nEND\r\n", nil, true},
		{"a size that is no number", "VALUE k:0 0 x\r\n1\r\nEND\r\n", nil, true},
		{"longer than announced", "VALUE k:0 0 1\r\n42\r\nEND\r\n", nil, true},
		{"shorter than announced", "VALUE k:0 0 3\r\n42\r\nEND\r\n", nil, true},
		{"negative", "VALUE k:0 0 2\r\n-4\r\nEND\r\n", nil, true},
		{"not a number", "VALUE k:0 0 3\r\nabc\r\nEND\r\n", nil, true},
		{"empty", "VALUE k:0 0 0\r\n\r\nEND\r\n", nil, true},
		{"over int64", "VALUE k:0 0 19\r\n9223372036854775808\r\nEND\r\n", nil, true},
		{"4 GiB announced", "VALUE k:0 0 4294967295\r\n", nil, true},
		{"NF", "NF\r\n", nil, true},
		{"EN", "EN\r\n", nil, true},
		{"SERVER_ERROR", "SERVER_ERROR busy\r\n", nil, true},
		{"ERROR", "ERROR\r\n", nil, true},
		{"END without CR", "END\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]int64{}
			err := reader(tc.answer).Counters(keys, got)
			if tc.wantErr {
				wantAnswerError(t, "Counters", err)
				return
			}
			if err != nil || !maps.Equal(got, tc.want) {
				t.Errorf("Counters = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestMetaGet(t *testing.T) {
	const key = "fg1:v:1"
	tests := []struct {
		answer  string
		want    string // value and CAS, or "miss"
		wantErr bool
	}{
		{"EN\r\n", "miss", false},
		{"EN kfg1:v:1\r\n", "miss", false},
		{"VA 2 c9 kfg1:v:1\r\nhi\r\n", "hi 9", false},
		{"VA 2 kfg1:v:1 c18446744073709551615\r\nhi\r\n", "hi 18446744073709551615", false},
		{"VA 0 c1 kfg1:v:1\r\n\r\n", " 1", false},
		{"VA 5 c1 kfg1:v:1\r\n\r\nEND\r\n", "\r\nEND 1", false},

		{"VA 1 c7 kfg1:other:1\r\nx\r\n", "", true},
		{"EN kfg1:other:1\r\n", "", true},
		{"EN c7\r\n", "", true},
		{"VA 1 c7\r\nx\r\n", "", true},
		{"VA 1 kfg1:v:1\r\nx\r\n", "", true},
		{"VA 1 c0 kfg1:v:1\r\nx\r\n", "", true},
		{"VA 1 c kfg1:v:1\r\nx\r\n", "", true},
		{"VA 1 c-1 kfg1:v:1\r\nx\r\n", "", true},
		{"VA 1 c7 kfg1:v:1 t60\r\nx\r\n", "", true},
		{"VA 1 kfg1:v:1 kfg1:v:1\r\nx\r\n", "", true},
		{"VA 2 c7 kfg1:v:1\r\nx\r\nEN\r\n", "", true},
		{"VA 1 c7 kfg1:v:1\r\nxy\r\n", "", true},
		{"VA 65537 c7 kfg1:v:1\r\n", "", true},
		{"VA -1 c7 kfg1:v:1\r\n\r\n", "", true},
		{"VA\r\n", "", true},
		{"VALUE fg1:v:1 0 1 7\r\nx\r\nEND\r\n", "", true},
		{"HD\r\n", "", true},
		{"NF\r\n", "", true},
		{"SERVER_ERROR out of memory\r\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.answer, func(t *testing.T) {
			item, found, err := reader(tc.answer).MetaGet(key)
			if tc.wantErr {
				wantAnswerError(t, "MetaGet", err)
				if found || item.Value != nil || item.CAS != 0 {
					t.Errorf("MetaGet = %+v, %v with an error", item, found)
				}
				return
			}
			got := "miss"
			if found {
				got = fmt.Sprint(string(item.Value), " ", item.CAS)
			}
			if err != nil || got != tc.want {
				t.Errorf("MetaGet = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestMetaGetValueIsCallers checks that the value read does not share the
// reader's buffer: the next answer must not change it.
func TestMetaGetValueIsCallers(t *testing.T) {
	r := reader("VA 2 c1 kk\r\nab\r\nVA 2 c2 kk\r\nxy\r\n")
	first, _, err := r.MetaGet("k")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.MetaGet("k"); err != nil {
		t.Fatal(err)
	}
	if string(first.Value) != "ab" || cap(first.Value) != 2 {
		t.Errorf("the first value is %q (capacity %d) after the second read, want \"ab\" (2)", first.Value, cap(first.Value))
	}
}

func TestMetaSet(t *testing.T) {
	tests := []struct {
		answer  string
		cas     uint64
		want    bool
		wantErr bool
	}{
		{"HD\r\n", 0, true, false},
		{"HD\r\n", 7, true, false},
		{"NS\r\n", 0, false, false},
		{"EX\r\n", 7, false, false},
		{"NF\r\n", 7, false, false},

		{"NF\r\n", 0, false, true},
		{"EX\r\n", 0, false, true},
		{"NS\r\n", 7, false, true},
		{"HD c8\r\n", 7, false, true},
		{"STORED\r\n", 0, false, true},
		{"NOT_STORED\r\n", 0, false, true},
		{"EXISTS\r\n", 7, false, true},
		{"NOT_FOUND\r\n", 7, false, true},
		{"SERVER_ERROR out of memory storing object\r\n", 0, false, true},
		{"CLIENT_ERROR bad data chunk\r\n", 7, false, true},
		{"ERROR\r\n", 7, false, true},
		{"hd\r\n", 0, false, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q with cas %d", tc.answer, tc.cas), func(t *testing.T) {
			got, err := reader(tc.answer).MetaSet(tc.cas)
			if tc.wantErr {
				wantAnswerError(t, "MetaSet", err)
			} else if err != nil {
				t.Errorf("MetaSet: %v", err)
			}
			if got != tc.want {
				t.Errorf("MetaSet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStats(t *testing.T) {
	got, err := reader("STAT pid 7\r\nSTAT version 1.6.18\r\nEND\r\n").Stats(10)
	if want := []Stat{{"pid", "7"}, {"version", "1.6.18"}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Stats = %v, %v; want %v", got, err, want)
	}
	for _, answer := range []string{"ERROR\r\n", "STAT pid\r\nEND\r\n", "STATS pid 7\r\nEND\r\n", strings.Repeat("STAT x 1\r\n", 11)} {
		_, err := reader(answer).Stats(10)
		wantAnswerError(t, fmt.Sprintf("Stats of %q", answer), err)
	}
}

func TestFields(t *testing.T) {
	tests := []struct {
		line string
		max  int
		want []string
	}{
		{"VA 2 t", 3, []string{"VA", "2", "t"}},
		{"VALUE k 0 2 7", 5, []string{"VALUE", "k", "0", "2", "7"}},
		{"VALUE k 0 2 7 extra", 5, []string{"VALUE", "k", "0", "2", "7"}},
		{"  VA   2  ", 3, []string{"VA", "2"}},
		{"NF", 3, []string{"NF"}},
		{"", 3, nil},
		{"   ", 3, nil},
	}
	for _, tt := range tests {
		buf := make([][]byte, 0, tt.max)
		var got []string
		for _, f := range fields(buf, []byte(tt.line)) {
			got = append(got, string(f))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("fields(%q) up to %d = %q, want %q", tt.line, tt.max, got, tt.want)
		}
	}
}

// TestAnswersDoNotAllocate pins that reading an ma answer and encoding the
// commands of a decision allocate nothing: they run on every decision.
func TestAnswersDoNotAllocate(t *testing.T) {
	r := reader(strings.Repeat("VA 2\r\n42\r\n", 1000))
	allocs := testing.AllocsPerRun(500, func() {
		if v, err := r.Arithmetic(1); err != nil || v != 42 {
			t.Fatalf("Arithmetic = %d, %v; want 42", v, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Arithmetic allocates %v times per answer, want 0", allocs)
	}
	w := NewWriter(io.Discard, 4096)
	gets := []string{"fg1:a:1800000000"}
	allocs = testing.AllocsPerRun(500, func() {
		w.Arithmetic("fg1:a:1800000001", 1, 3600)
		w.Arithmetic("fg1:a:m30000000", 1, 3600)
		w.Get(gets)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("encoding a decision allocates %v times, want 0", allocs)
	}
}

func TestLegalKey(t *testing.T) {
	for key, want := range map[string]bool{
		"fg1:a:1": true, strings.Repeat("k", MaxKeyLen): true, "~!@#$%^&*()": true, "\x80\xff": true,
		"": false, strings.Repeat("k", MaxKeyLen+1): false, "has space": false, "has\nnewline": false,
		"cr\r": false, "tab\t": false, "nul\x00": false, "del\x7f": false,
	} {
		if got := LegalKey(key); got != want {
			t.Errorf("LegalKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestExpiration(t *testing.T) {
	now := time.Unix(1_780_000_000, 0)
	const day = 24 * time.Hour
	tests := []struct {
		ttl  time.Duration
		want int32
	}{
		{-time.Second, 1},
		{0, 1},
		{1, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{time.Hour, 3600},
		{30 * day, 2_592_000},
		{30*day + time.Second, 1_780_000_000 + 2_592_001},
		{40 * day, 1_780_000_000 + 3_456_000},
		{100 * 365 * day, 1<<31 - 1},
	}
	for _, tt := range tests {
		if got := Expiration(tt.ttl, now); got != tt.want {
			t.Errorf("Expiration(%v) = %d, want %d", tt.ttl, got, tt.want)
		}
	}
}
