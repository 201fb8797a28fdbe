package topk

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

// add adds one denial of each item, in order, at instants 1, 2, 3, ...
func add(s *Summary, items ...string) {
	for _, it := range items {
		s.Add(it, 1, int64(s.Total()+1), 0, "")
	}
}

// brief is an entry as the table tests spell it.
type brief struct {
	item       string
	count, err uint64
}

func briefs(es []Entry) []brief {
	out := make([]brief, len(es))
	for i, e := range es {
		out[i] = brief{e.Item, e.Count, e.Err}
	}
	return out
}

func TestSummaryAdd(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		items    []string
		want     []brief
		floor    uint64
	}{
		{"empty", 3, nil, []brief{}, 0},
		{"under capacity, exact", 3, []string{"a", "b", "a", "c", "a", "b"}, []brief{{"a", 3, 0}, {"b", 2, 0}, {"c", 1, 0}}, 0},
		{"newcomer takes the least recent minimum", 2, []string{"a", "a", "b", "c"}, []brief{{"c", 2, 1}, {"a", 2, 0}}, 1},
		{"evicted item comes back with the floor", 2, []string{"a", "a", "a", "b", "c", "b"}, []brief{{"b", 3, 2}, {"a", 3, 0}}, 2},
		{"capacity one counts everything in one entry", 1, []string{"a", "b", "c"}, []brief{{"c", 3, 2}}, 2},
		{"ties broken by the most recent", 3, []string{"x", "y", "z"}, []brief{{"z", 1, 0}, {"y", 1, 0}, {"x", 1, 0}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSummary(tc.capacity)
			add(s, tc.items...)
			got := briefs(s.Top(0))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Top = %v, want %v", got, tc.want)
			}
			if s.Floor() != tc.floor {
				t.Errorf("Floor = %d, want %d", s.Floor(), tc.floor)
			}
			if s.Total() != uint64(len(tc.items)) {
				t.Errorf("Total = %d, want %d", s.Total(), len(tc.items))
			}
		})
	}
}

func TestSummaryEntryDetails(t *testing.T) {
	s := NewSummary(4)
	s.Add("a", 1, 100, 500, "r1")
	s.Add("a", 2, 50, 300, "r2") // an older instant arriving late
	s.Add("a", 1, 200, 400, "r3")
	e := s.Top(1)[0]
	want := Entry{Item: "a", Count: 4, First: 50, Last: 200, RetryUntil: 500, Rule: "r3"}
	if e != want {
		t.Errorf("entry = %+v, want %+v", e, want)
	}
	s.Add("b", 0, 1, 1, "") // zero denials: nothing
	if s.Len() != 1 || s.Total() != 4 {
		t.Errorf("after adding 0: len %d total %d, want 1 and 4", s.Len(), s.Total())
	}
	if got := len(s.Top(0)); got != 1 {
		t.Errorf("Top(0) has %d entries", got)
	}
	s.Reset()
	if s.Len() != 0 || s.Total() != 0 || s.Floor() != 0 {
		t.Errorf("after Reset: len %d total %d floor %d", s.Len(), s.Total(), s.Floor())
	}
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		inputs   [][]string
		inCap    int
		want     []brief
		floor    uint64
	}{
		{"disjoint, room for all", 4, [][]string{{"a", "a"}, {"b"}}, 4, []brief{{"a", 2, 0}, {"b", 1, 0}}, 0},
		{"shared items add up", 4, [][]string{{"a", "b"}, {"a"}}, 4, []brief{{"a", 2, 0}, {"b", 1, 0}}, 0},
		{"missing from a full input adds its floor", 4, [][]string{{"a", "a", "b", "c"}, {"d"}}, 2, []brief{{"c", 2, 1}, {"a", 2, 0}, {"d", 1 + 1, 1}}, 1},
		{"truncation raises the floor", 1, [][]string{{"a", "a"}, {"b"}}, 4, []brief{{"a", 2, 0}}, 1},
		{"no inputs", 3, nil, 3, []brief{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []*Summary
			var total uint64
			for _, items := range tc.inputs {
				s := NewSummary(tc.inCap)
				add(s, items...)
				in = append(in, s)
				total += uint64(len(items))
			}
			m := Merge(tc.capacity, in...)
			got := briefs(m.Top(0))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Top = %v, want %v", got, tc.want)
			}
			if m.Floor() != tc.floor || m.Total() != total {
				t.Errorf("Floor %d Total %d, want %d %d", m.Floor(), m.Total(), tc.floor, total)
			}
		})
	}
}

// checkBounds checks the error bounds of Summary for s against exact.
func checkBounds(t *testing.T, s *Summary, exact map[string]uint64, what string) {
	t.Helper()
	var n uint64
	for _, c := range exact {
		n += c
	}
	if s.Total() != n {
		t.Fatalf("%s: Total %d, want %d", what, s.Total(), n)
	}
	bound := n / uint64(s.Capacity())
	if s.Floor() > bound {
		t.Errorf("%s: Floor %d > N/k = %d", what, s.Floor(), bound)
	}
	listed := make(map[string]bool)
	for _, e := range s.Top(0) {
		listed[e.Item] = true
		c := exact[e.Item]
		if e.Count < c || e.Count-e.Err > c {
			t.Errorf("%s: %s: true count %d outside [%d, %d]", what, e.Item, c, e.Count-e.Err, e.Count)
		}
		if e.Err > s.Floor() {
			t.Errorf("%s: %s: Err %d > Floor %d", what, e.Item, e.Err, s.Floor())
		}
	}
	for it, c := range exact {
		if !listed[it] && c > s.Floor() {
			t.Errorf("%s: %s denied %d times, not listed, Floor %d", what, it, c, s.Floor())
		}
	}
}

// zipfStream returns n items drawn from a Zipf distribution over distinct
// names, the heavy hitters of a realistic denial stream.
func zipfStream(r *rand.Rand, n int, distinct uint64, s float64) []string {
	z := rand.NewZipf(r, s, 1, distinct-1)
	out := make([]string, n)
	for i := range out {
		out[i] = "ip:10.0." + strconv.FormatUint(z.Uint64(), 10)
	}
	return out
}

// TestSummaryProperty checks the error bounds against exact counts, for
// single summaries and for merges of several, on random streams.
func TestSummaryProperty(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 0xf1))
		capacity := 1 + r.IntN(40)
		skew := 1.01 + r.Float64()*2
		parts := 1 + r.IntN(5)
		var in []*Summary
		all := make(map[string]uint64)
		for p := range parts {
			s := NewSummary(capacity)
			exact := make(map[string]uint64)
			for _, it := range zipfStream(r, 200+r.IntN(3000), uint64(50+r.IntN(2000)), skew) {
				s.Add(it, 1, int64(len(exact)), 0, "")
				exact[it]++
				all[it]++
			}
			checkBounds(t, s, exact, fmt.Sprintf("seed %d part %d", seed, p))
			in = append(in, s)
		}
		checkBounds(t, Merge(capacity, in...), all, fmt.Sprintf("seed %d merge of %d", seed, parts))
		// A merge of merges, as a cluster view of replicas' hour views is.
		if parts > 1 {
			half := Merge(capacity, in[:parts/2]...)
			checkBounds(t, Merge(capacity, half, Merge(capacity, in[parts/2:]...)), all, fmt.Sprintf("seed %d merge of merges", seed))
		}
	}
}

// TestSummaryFindsHeavyHitters: with a few clients denied far more often
// than a flood of one-off ones, the summary lists exactly them on top.
func TestSummaryFindsHeavyHitters(t *testing.T) {
	// 22,100 denials over 100 entries: anyone denied more than 221 times
	// is listed, and a one-off client's count is at most 222.
	s := NewSummary(100)
	heavy := map[string]int{"ip:198.51.100.1": 900, "ip:198.51.100.2": 700, "ip:198.51.100.3": 500}
	r := rand.New(rand.NewPCG(1, 2))
	var stream []string
	for it, n := range heavy {
		for range n {
			stream = append(stream, it)
		}
	}
	for i := range 20000 {
		stream = append(stream, "ip:10.1."+strconv.Itoa(i))
	}
	r.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
	add(s, stream...)
	top := s.Top(3)
	for i, want := range []string{"ip:198.51.100.1", "ip:198.51.100.2", "ip:198.51.100.3"} {
		if top[i].Item != want {
			t.Fatalf("top %d = %s, want %s (top: %v)", i, top[i].Item, want, briefs(top))
		}
		if c := uint64(heavy[want]); top[i].Count < c || top[i].Count-top[i].Err > c {
			t.Errorf("%s: %d not in [%d, %d]", want, c, top[i].Count-top[i].Err, top[i].Count)
		}
	}
}

// BenchmarkSummaryAdd is the cost of one denial in a full summary of
// distinct requestors, the worst case (every one evicts).
func BenchmarkSummaryAdd(b *testing.B) {
	s := NewSummary(DefaultCapacity)
	items := make([]string, 1<<16)
	for i := range items {
		items[i] = "ip:10." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&255) + ".1"
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Add(items[i&(len(items)-1)], 1, int64(i), 0, "")
	}
}

// BenchmarkTrackerMillionClients records 1,000,000 distinct denied clients
// (IPv6 addresses, 10 denials of a few heavy hitters among them) in one
// scope over an hour and reports the heap the Tracker holds afterwards:
// bounded by the capacity, not by the clients.
func BenchmarkTrackerMillionClients(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		tr := NewTracker(Config{})
		t0 := int64(1_800_000_000)
		const clients = 1_000_000
		batch := make([]Denial, 0, 1000)
		for i := range clients {
			at := t0 + int64(i)*3600/clients
			item := fmt.Sprintf("ip:2001:db8:%x:%x::1", i>>16, i&0xffff)
			if i%100 == 0 {
				item = "ip:203.0.113." + strconv.Itoa(i%7)
			}
			batch = append(batch, Denial{Scope: "api", Item: item, At: unix(at), RetryAfter: 30e9})
			if len(batch) == cap(batch) {
				tr.RecordAll(batch)
				batch = batch[:0]
			}
		}
		tr.RecordAll(batch)
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "heap-bytes")
		b.ReportMetric(float64(len(tr.Summary("api", Hour, unix(t0+3599)).Top(0))), "entries")
		runtime.KeepAlive(tr)
		b.StartTimer()
	}
}
