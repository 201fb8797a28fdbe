// Package limiter decides whether a requestor may make one more request. It
// holds the algorithms (Strategy implementations), the Store abstraction they
// count in, and the embedded in-memory Store; the memcached Store lives in
// the subpackage limiter/memcache. The package knows nothing of Envoy or
// gRPC: package authz translates Envoy's CheckRequest into a Request.
//
// # The sliding window
//
// Sliding allows a request at second t if and only if fewer than Limit
// allowed requests of the same requestor fall in the seconds
// [t-Window+1, t], and the few seconds after t in which replicas whose
// clocks run ahead may already count (see "Exactness across replicas").
// Denied requests are not counted, so a requestor told to retry in N seconds
// is let in after N seconds however often it retried meanwhile.
//
// # Buckets and keys
//
// Every allowed request increments one counter per requestor per second and,
// for windows of three minutes or more, one aggregate counter per requestor
// per minute. Keys are
//
//	fg1:<id>:<unix second>     e.g. fg1:q3Jd0yY6p1o1Yz7mS5b1Zw:1800000000
//	fg1:<id>:m<unix minute>    e.g. fg1:q3Jd0yY6p1o1Yz7mS5b1Zw:m30000000
//
// where <id> is RequestorID: 22 characters of base64url over a SHA-256 of
// the scope, the window and the requestor. Whatever a client sends (spaces,
// control bytes, memcached protocol text, 64 KB headers) the key is 37-41
// printable bytes, far below memcached's 250-byte limit, so no requestor can
// make a store call fail and slip through a fail-open path. The memcached
// store picks the server from the part before the last ':' so all buckets of
// one requestor live on one server and are read in one round trip; it picks
// by rendezvous hashing, so a memcached that joins or leaves a set of N moves
// only about 1/N of the requestors, whose counts start again from zero.
//
// Second counters expire Window+SkewMargin after creation, minute aggregates
// Window+2*SkewMargin+60s, so every bucket outlives the window in which it
// counts even when replica clocks disagree.
//
// # Reading an hour without reading 3,600 keys
//
// A decision needs the sum of the window's buckets. Reading 3,600 keys per
// decision is far too slow, so each Sliding instance caches, per requestor, the
// part of the window that is settled: seconds so old that no decision still
// running anywhere can count in them. With SlidingConfig.MaxClockSkew s and
// MaxDecisionTime d (a decision whose counting answer comes later than d
// after Allow began fails with ErrStoreUnavailable instead of deciding), a
// decision that read second u on its clock counted by real time u+1+d on
// that clock, which is at most u+1+d+s on any other replica's; so second u
// is settled at t once t >= u+2+floor(s+d), the lag (3 by default). The cache
// holds only non-zero buckets (at most Limit of them plus 60 aggregates) and
// knows up to which second it is complete. A decision then reads only what it
// does not know yet, in the round trip that counts it (see below):
//
//   - the fresh seconds (t-lag, t+ahead] but t itself, where ahead =
//     ceil(s+d) (2 by default) covers replicas whose clocks run ahead: 4
//     keys by default. In a window with minute aggregates only those of
//     them outside t's minute, as the minute's increment answers for the
//     rest (see below): none at 56 seconds of 60 with the defaults;
//   - first in a new second, the seconds that settled since its last
//     decision (usually one);
//   - a requestor this instance has not seen within the window: whole settled
//     minutes as aggregates and the partial minutes at either end as seconds,
//     at most about 180 keys.
//
// When the window's start moves into a minute known only as an aggregate, or
// the retry time of a denial falls inside one, that minute's seconds are read
// once (60 keys) and replace the aggregate. Concurrent decisions for one
// requestor share a single read of the settled seconds.
//
// # Exactness across replicas
//
// Every decision counts first and reads after: a Store's Batch applies
// its increments in order and then reads, and memcached applies one
// connection's commands in order and each key's changes one at a time. A
// decision at t increments second t and then, in a window with minute
// aggregates, its minute m. Without minute aggregates its total is the
// settled sum, the fresh seconds read, and the value v its second's
// increment returned. With them it is the settled sum before m, the value M
// its minute's increment returned (every request counted in m so far, its
// own included, in one atomic answer), and the fresh seconds outside m; so
// in most seconds a decision is its two increments and nothing else. It is
// allowed when that total is at most Limit, else denied and undone.
//
// No run of Window consecutive seconds ever holds more than Limit allowed
// requests. Call a decision's point its minute's increment, or without
// minute aggregates its second's. Take those requests and the one, r, whose
// point came last. Each other q was counted in a second of the run, and so
// no earlier than r's window start; and, since it read its clock before r
// counted, at most ceil(s+d) seconds after r's second on r's clock (its
// clock is at most s ahead, and r counted at most d after reading its own).
// With minute aggregates: a q in r's minute m is in M, as q's point came
// before r's; a q in another minute is in a settled second, which r had, or
// in a fresh second outside m, which r read after its point, so after q's
// second's increment, which q made before its own point. Without them: q is
// in a settled second, or in r's second, whose v counts every increment
// before r's, or in a fresh second, which r read after its point. r's total
// thus included all of them and r itself, and r was allowed: there are at
// most Limit. The order of a decision's two increments matters: with the
// minute first, a decision at the end of a minute could read a second of
// the next before a decision there, whose minute came earlier, counted its
// second (TestSlidingInterleavings has that case). A minute's count lower
// than the settled seconds of the minute that the deciding replica knows,
// and its own hits, means the aggregate lost counts (memcached evicted it,
// or a connection broke between a count's two increments): that decision
// reads the fresh seconds after its increments, decides on the seconds, and
// adds what the minute lost back to it. Settled seconds hold no increment
// that a decision still deciding will make (that is what the lag ensures); an
// increment whose answer came too late fails its decision, so it only ever
// makes counts higher, as a failed undo does, erring on the safe side.
// TestSlidingInterleavings checks this on replicas with skewed clocks over
// every interleaving of small cases.
//
// The rule errs on the side of under-admission, in bounded ways. Two
// decisions in different seconds may each see the other's increment and both
// be denied: a denial undoes its count and reads again in one round trip, and
// when that read shows room (those it saw were being denied too) it tries
// again after a random pause under a millisecond, up to maxAttempts in all;
// of several decisions that denied each other, the one whose second read came
// last sees every undo and gets in. Seconds ahead of t count in t's window,
// so a replica whose clock runs ahead delays the others' quota by its lead.
//
// # Denials
//
// A requestor over the limit on settled seconds alone is denied without a
// round trip (nothing can change those), lag seconds after it reached the
// limit. Before that, a replica that denied it in this second or the last
// reads before it counts: a requestor hammering at its limit costs one read
// per request, not an increment, a read and a decrement. A denial on fresh
// counts is never repeated without that read: the counts may have included
// requests that were being denied elsewhere, and repeating it would let a
// burst's last requests find no one counting (measured: 99 of 100 in about
// one run in four of TestSlidingOnMemcachedExactUnderRaces with a 50ms
// repeat).
//
// # Retry time
//
// When the limit is reached, no further request is counted, so the window
// ending at t+d holds the current buckets (settled, fresh and ahead) minus
// those older than t+d-Window+1. RetryAfter is the smallest d at which that
// drops below Limit: found by walking the buckets from the oldest until
// enough requests have left. It is computed on the deciding replica's clock;
// one whose clock is behind may refuse for up to the skew longer.
//
// # Other strategies
//
// NewStrategy builds a strategy by name: "sliding" (the default, above),
// "fixed", "token-bucket" or "sliding-log"; Strategies lists them, and
// ParseStrategy checks a name from a flag or a file. Each is one file here,
// so adding one touches neither package authz nor the command. Like Sliding,
// each promises a RetryAfter in whole seconds that a denied requestor may
// rely on. The three others key their state by a RequestorID over the scope
// tagged with the strategy's name, the window and the requestor, so their
// keys are as short and safe as Sliding's and never share an identity with
// another strategy's. Each instance remembers whom it denied until when, and
// trusts that memory for at most a second: a set of requests (below) may
// hold counts it later takes back, so a denial is not certain to last, and
// a requestor hammering past its limit costs one store round trip a second
// per instance.
//
// Fixed counts in windows aligned to the Unix epoch (a window of Window
// starts at every multiple of it): one counter per requestor per window,
// fg1:<id>:f<Unix second / window>, living Window+SkewMargin. It is Sliding's
// increment-then-check with a single bucket, exact across replicas, and
// RetryAfter is the time to the boundary. It is the cheapest strategy but
// lets up to twice the limit through around a boundary, and with clocks s
// apart each replica names the window by its own clock, so a counter's
// requests span Window+s of true time (the Fixed type says what follows).
//
// TokenBucket is GCRA: a bucket of Burst tokens (Limit when Request.Burst
// is zero) refilled at Limit per Window. Its state is one instant per
// requestor, the theoretical arrival time, exact to 1/Limit of a
// millisecond, in fg1:<id>:g, where the id also covers the limit and burst.
//
// SlidingLog stores the millisecond of every allowed request, varint-encoded
// in one value fg1:<id>:l, and allows a request when fewer than Limit fall in
// the last Window. It is exact but costs a read and a write of the whole log,
// so Limit is capped at MaxSlidingLogLimit (1,000).
//
// # Skewed clocks and the value strategies
//
// With replica clocks up to s = StrategyConfig.MaxClockSkew apart
// (DefaultMaxClockSkew when zero), each value strategy errs on the side of
// under-admission by a bounded amount, and never admits more than one
// replica on one clock would:
//
//   - TokenBucket judges a bucket at t-s, no later than the slowest clock
//     reads, and restarts a TAT that is behind t from t, no earlier than any
//     clock reads. Take the requests allowed in an interval [a, b] of true
//     time: the first, at clock reading t1 >= R(a) (R is the slowest clock),
//     leaves the TAT at t1+step or later, and each other adds a step; the
//     last was judged at t-s <= R(b). So (k-1)*step <= R(b)-R(a)+tolerance:
//     k <= (b-a)/step + Burst, the bound of one bucket on one clock
//     (TestTokenBucketSkewedClocks). The cost: s of refill, s*Limit/Window
//     tokens of the burst, once after a quiet period; and when the burst
//     holds less than that, (Burst-1)*Window/Limit < s, an emptied bucket
//     refills one token per Window/Limit + s - (Burst-1)*Window/Limit
//     instead of Window/Limit.
//   - SlidingLog counts an entry for Window+s: every request allowed within
//     Window of true time before another's decision was recorded at an
//     instant no earlier than its replica's clock, which is less than Window
//     behind the deciding clock plus s; and entries are dropped only past
//     Window+s of the newest instant, which is no later than s ahead of any
//     clock. So no true window holds more than Limit
//     (TestSlidingLogSkewedClocks). The cost: a requestor at its limit waits
//     up to s longer: in the worst case Limit per Window+s.
//
// # Hits and sets of requests
//
// A Request counts as Hits requests (Envoy's hits_addend; 0 means 1): it is
// allowed only if all its hits fit the room left, and then counts them all.
// A request of h hits under a limit L fits exactly when one of one hit fits
// under L-h+1, which is how every strategy decides it, keys its denials and
// computes its retry time. A request of more hits than its strategy can
// ever hold (Limit; a token bucket's burst) is denied at once with
// RetryAfter the Window.
//
// MultiStrategy.AllowAll decides several requests as one, as Envoy's rate
// limit service asks with several descriptors: all are counted, or none.
// Requests of one set that share a requestor (its counters or value) form
// one group, counted together and each checked against its own limit.
// Allow is AllowAll of one request: one rule.
//
// Sliding counts every group of a set (one round trip each, concurrently),
// reads as for one request, and is allowed when every group's total is
// within its limit; otherwise it undoes every group and reads again in the
// same round trips, and tries again while every group shows room. The
// exactness proof above holds for each requestor unchanged: an undo only
// lowers a count, and every count is made before its read. A set denied by
// one group briefly holds counts in the others, which a concurrent
// decision may see and be denied by: only when its own read after its undo
// still shows them, so within the set's undo round trip. Groups are
// prepared in key order, so two sets never wait on each other's reads in a
// cycle. Fixed does the same with one increment per group, one after
// another, and the value its decrement returns as the read.
//
// TokenBucket and SlidingLog cannot make a set one compare-and-swap. They
// take each group's tokens (record its entries) in key order, each with its
// own compare-and-swap, holding the instance's turns of all the set's keys,
// and on a later group's denial give back what they took: one compensating
// compare-and-swap each, moving the TAT back by the hits taken, or removing
// as many entries at the instant recorded. Tokens and entries at one instant
// are alike, so what others took meanwhile stays taken. Between the take
// and the give-back, a concurrent decision may see the set's tokens gone or
// entries present and be denied: for at most the time of the set's later
// compare-and-swaps (bounded by the caller's deadline), by at most the
// set's hits per key, and remembered for at most a second. Nothing is ever
// given back that was not taken: a swap that lost its race and a write that
// failed are not given back.
//
// # Values and compare-and-swap
//
// A token bucket or a log is not a counter, so TokenBucket and SlidingLog
// keep it as a value: the Store reads a value with its version and writes
// it back only if nobody wrote it meanwhile (memcached's gets and cas,
// or add to create). A decision reads the value, decides, and writes the new
// value conditionally; when another replica won the race it reads again,
// after a short random pause, up to 24 times, and then fails with
// ErrContention (an ErrStoreUnavailable). Decisions of one instance for one
// requestor take turns, so only replicas race each other, and a denial
// writes nothing at all. Each write sets the value's time to live anew.
package limiter
