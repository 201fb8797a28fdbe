package memcache

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
)

// setOf returns a server set of addrs, without clients: enough to pick.
func setOf(addrs ...string) *serverSet {
	servers := make([]*server, len(addrs))
	for i, a := range addrs {
		servers[i] = &server{addr: a, seed: serverSeed(a)}
	}
	return newServerSet(servers)
}

// requestors returns the server keys of n requestors as the limiter makes
// them: "fg1:" and 22 characters of base64url over a SHA-256.
func requestors(n int) []string {
	out := make([]string, n)
	for i := range out {
		sum := sha256.Sum256(fmt.Appendf(nil, "requestor-%d", i))
		out[i] = "fg1:" + base64.RawURLEncoding.EncodeToString(sum[:16])
	}
	return out
}

// picks returns the address each requestor's server has in set.
func picks(set *serverSet, reqs []string) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = set.pick(r).addr
	}
	return out
}

var podAddrs = []string{"10.244.1.17:11211", "10.244.2.5:11211", "10.244.3.201:11211", "10.244.1.18:11211", "[fd00::7]:11211"}

func TestPickDistribution(t *testing.T) {
	reqs := requestors(30_000)
	for _, n := range []int{2, 3, 4, 5} {
		t.Run(fmt.Sprint(n, " servers"), func(t *testing.T) {
			count := map[string]int{}
			for _, a := range picks(setOf(podAddrs[:n]...), reqs) {
				count[a]++
			}
			// Binomial: the standard deviation is below 90 here, so a
			// band of ±10% of the fair share is over 10 of them.
			fair := len(reqs) / n
			for _, a := range podAddrs[:n] {
				if c := count[a]; c < fair*9/10 || c > fair*11/10 {
					t.Errorf("%s holds %d of %d requestors, want %d ±10%%; all: %v", a, c, len(reqs), fair, count)
				}
			}
		})
	}
}

func TestPickAddServer(t *testing.T) {
	reqs := requestors(30_000)
	before := picks(setOf(podAddrs[:3]...), reqs)
	after := picks(setOf(podAddrs[:4]...), reqs)
	moved := 0
	for i := range reqs {
		if before[i] == after[i] {
			continue
		}
		moved++
		if after[i] != podAddrs[3] {
			t.Fatalf("requestor %s moved from %s to %s, an old server; only moves to the new one are allowed", reqs[i], before[i], after[i])
		}
	}
	// 1/4 in expectation.
	if share := float64(moved) / float64(len(reqs)); share < 0.15 || share > 0.35 {
		t.Errorf("adding a 4th server moved %d of %d requestors (%.1f%%), want 15%%-35%%", moved, len(reqs), 100*share)
	}
}

func TestPickRemoveServer(t *testing.T) {
	reqs := requestors(30_000)
	all := podAddrs[:4]
	before := picks(setOf(all...), reqs)
	for _, gone := range all {
		t.Run(gone, func(t *testing.T) {
			rest := slices.DeleteFunc(slices.Clone(all), func(a string) bool { return a == gone })
			after := picks(setOf(rest...), reqs)
			got := map[string]int{} // where gone's requestors went
			for i := range reqs {
				switch {
				case before[i] == gone:
					got[after[i]]++
				case after[i] != before[i]:
					t.Fatalf("requestor %s moved from %s to %s although only %s left", reqs[i], before[i], after[i], gone)
				}
			}
			if len(got) != len(rest) {
				t.Errorf("the requestors of %s went to %v, want them spread over all of %q", gone, got, rest)
			}
		})
	}
}

func TestPickOrderIndependent(t *testing.T) {
	reqs := requestors(2_000)
	want := picks(setOf(podAddrs...), reqs)
	orders := [][]string{
		slices.Clone(podAddrs),
		{podAddrs[4], podAddrs[3], podAddrs[2], podAddrs[1], podAddrs[0]},
		{podAddrs[2], podAddrs[0], podAddrs[4], podAddrs[1], podAddrs[3]},
	}
	for _, order := range orders {
		if got := picks(setOf(order...), reqs); !slices.Equal(got, want) {
			t.Errorf("servers in order %q pick differently from %q", order, podAddrs)
		}
		if got := setOf(order...).addrs(); !slices.IsSorted(got) {
			t.Errorf("set of %q lists %q, want them sorted", order, got)
		}
	}
}

func TestPickEmptyAndOne(t *testing.T) {
	if srv := setOf().pick("fg1:x"); srv != nil {
		t.Errorf("empty set picked %q, want nil", srv.addr)
	}
	if srv := setOf("a:1").pick("fg1:x"); srv == nil || srv.addr != "a:1" {
		t.Errorf("set of one did not pick it: %v", srv)
	}
}

// TestPickStable pins the hash: replicas of different versions, as during a
// rolling upgrade, must pick the same server for a requestor.
func TestPickStable(t *testing.T) {
	if got := fnv1a64(""); got != 0xcbf29ce484222325 {
		t.Errorf(`fnv1a64("") = %#x, want the FNV-1a 64 offset basis`, got)
	}
	if got := fnv1a64("a"); got != 0xaf63dc4c8601ec8c {
		t.Errorf(`fnv1a64("a") = %#x, want 0xaf63dc4c8601ec8c`, got)
	}
	const addr, req = "10.244.1.17:11211", "fg1:q3Jd0yY6p1o1Yz7mS5b1Zw"
	if got := serverSeed(addr); got != 0x1f3299b67ce1825c {
		t.Errorf("serverSeed(%q) = %#x, want 0x1f3299b67ce1825c", addr, got)
	}
	if got := mix64(fnv1a64(req) ^ serverSeed(addr)); got != 0x989afc1c1b49ad9e {
		t.Errorf("score of %q on %q = %#x, want 0x989afc1c1b49ad9e", req, addr, got)
	}
	set := setOf(podAddrs[:3]...)
	want := map[string]string{
		"fg1:q3Jd0yY6p1o1Yz7mS5b1Zw": "10.244.1.17:11211",
		"fg1:N1iRbWUe0aucOWUGWs_g_Q": "10.244.3.201:11211",
		"fg1:AAAAAAAAAAAAAAAAAAAAAA": "10.244.1.17:11211",
	}
	for req, addr := range want {
		if got := set.pick(req).addr; got != addr {
			t.Errorf("pick(%q) = %s, want %s: the hash changed, so replicas of different versions disagree", req, got, addr)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	reqs := requestors(1024)
	for _, n := range []int{3, 10} {
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.244.%d.%d:11211", i, i*7)
		}
		set := setOf(addrs...)
		b.Run(fmt.Sprint(n, " servers"), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if set.pick(reqs[i%len(reqs)]) == nil {
						b.Fatal("no server")
					}
				}
			})
		})
	}
}
