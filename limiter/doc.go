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
// [t-Window+1, t]. Denied requests are not counted, so a requestor told to
// retry in N seconds is let in after N seconds however often it retried
// meanwhile.
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
// part of the window that is settled: seconds older than t-1, which no
// replica will count in again. The cache holds only non-zero buckets (at most
// Limit of them plus 60 aggregates) and knows up to which second it is
// complete. A decision then reads only what it does not know yet:
//
//   - a requestor seen in the last seconds: the one or two seconds since its
//     last decision, in one Get (with a BatchStore, in the round trip that
//     counts the request, see below);
//   - a requestor this instance has not seen within the window: whole settled
//     minutes as aggregates and the partial minutes at either end as seconds,
//     at most about 180 keys, in one Get;
//   - a denied requestor within the same second: nothing at all.
//
// When the window's start moves into a minute known only as an aggregate, or
// the retry time of a denial falls inside one, that minute's seconds are read
// once (60 keys) and replace the aggregate. Concurrent decisions for one
// requestor share a single read.
//
// # Exactness across replicas
//
// With the settled sum S known, the request is counted by an atomic increment
// of second t's counter; the value v it returns arbitrates between all
// concurrent decisions of all replicas: the request is allowed if v <= Limit-S
// and otherwise denied and decremented again. As every replica computes the
// same S for second t, exactly Limit-S increments succeed however many race.
// This holds while replica clocks agree to within a second (NTP); a failed
// decrement leaves the counter one too high, which errs on the safe side.
//
// # One round trip per decision
//
// When the Store is a BatchStore (the memcached store is), a decision that
// must read counts the request in the same round trip: the Get of what the
// cache lacks and the increments of second t and of its minute go out
// together, reads first. The value v the increment returns is compared with
// Limit-S once the read is merged, exactly as after a separate increment;
// a request that turns out to be denied, by the settled data or by v, is
// decremented again, as any request over the limit is, so that replicas
// still agree and a denied request leaves no trace. A requestor this replica
// denied in the previous second is read first and counted after, so a
// requestor hammering at its limit costs one small read per second, not a
// read, an increment and a decrement. Without a BatchStore, Sliding reads,
// then increments the second and the minute concurrently.
//
// # Retry time
//
// When the limit is reached, no further request is counted, so the window
// ending at t+d holds the current buckets minus those older than t+d-Window+1.
// RetryAfter is the smallest d at which that drops below Limit: found by
// walking the buckets from the oldest until enough requests have left.
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
// another strategy's. Each instance remembers whom it denied until when; as
// nothing any replica does can let that requestor in before that instant,
// the memory is exact, and a requestor hammering past its limit costs no
// store round trip.
//
// Fixed counts in windows aligned to the Unix epoch (a window of Window
// starts at every multiple of it): one counter per requestor per window,
// fg1:<id>:f<Unix second / window>, living Window+SkewMargin. It is Sliding's
// increment-then-check with a single bucket, exact across replicas, and
// RetryAfter is the time to the boundary. It is the cheapest strategy but
// lets up to twice the limit through around a boundary.
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
// # Values and compare-and-swap
//
// A token bucket or a log is not a counter, so TokenBucket and SlidingLog
// need a SwapStore: a Store that can also read a value with its version and
// write it back only if nobody wrote it meanwhile (memcached's gets and cas,
// or add to create). A decision reads the value, decides, and writes the new
// value conditionally; when another replica won the race it reads again,
// after a short random pause, up to 24 times, and then fails with
// ErrContention (an ErrStoreUnavailable). Decisions of one instance for one
// requestor take turns, so only replicas race each other, and a denial
// writes nothing at all. Each write sets the value's time to live anew.
package limiter
