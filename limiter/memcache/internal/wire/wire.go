// Package wire is memcached's text protocol as floodgate's memcache store
// speaks it: a Writer encodes the commands and a Reader parses their
// answers into typed results. It does no I/O of its own beyond the buffered
// reader and writer it is given, keeps no state between answers, and knows
// nothing of connections, servers or the limiter.
//
// The commands (memcached 1.6 or later):
//
//	ma <key> N<exptime> J<delta> D<delta> v   add delta > 0, creating a missing counter with delta
//	ma <key> D0 v                             read a counter (delta 0)
//	ma <key> MD D<-delta> v                   subtract (memcached stops at 0)
//	get <key>...                              read counters, in one multi-key get
//	mg <key> v c k                            read a value with its CAS unique and its key
//	ms <key> <len> T<exptime> ME              store a value only if the key is missing (add)
//	ms <key> <len> T<exptime> C<cas>          store a value only if its CAS unique is still cas
//	stats                                     the server's general statistics
//
// The Reader is strict. For each command it accepts only the answers
// memcached gives to that command as floodgate sends it, and reports
// anything else (an answer that belongs to another command, a number out of
// range, a value of a key not asked for, a line not ended by CRLF, a value
// longer or shorter than announced) as an error wrapping ErrAnswer. A count
// misread as zero, or a value read under the wrong key, would let a
// requestor through uncounted; an error fails the decision instead, which
// the limiter then treats as the store being unavailable. Errors of the
// underlying reader (io.EOF, a timeout) are returned wrapped, not as
// ErrAnswer.
//
// A Reader and a Writer are not safe for concurrent use; one of each per
// connection, used by one goroutine at a time, is the intended use.
package wire

import (
	"errors"
	"fmt"
	"math"
	"time"
)

const (
	// MaxKeyLen is memcached's longest key, in bytes.
	MaxKeyLen = 250

	// MaxValueLen is the longest value a Reader accepts in an answer to mg,
	// in bytes: the limiter's values are at most 64 KiB (see
	// limiter.Store's values), so a longer one was not written by floodgate.
	MaxValueLen = 64 << 10

	// MaxLineLen is the longest answer line a Reader accepts, its CRLF
	// included: the size of its buffer.
	MaxLineLen = 4096

	// maxCounterLen is the most digits of a counter, a uint64.
	maxCounterLen = 20

	// maxRelativeExpiration is the longest expiration memcached takes as
	// relative to now, 30 days in seconds; it reads larger ones as Unix
	// times.
	maxRelativeExpiration = 30 * 24 * 60 * 60
)

// ErrAnswer marks an answer that is not one memcached gives to the command
// it answers.
var ErrAnswer = errors.New("unexpected answer")

// ErrMalformedKey is why a key that LegalKey refuses cannot be sent.
var ErrMalformedKey = errors.New("malformed key: memcached keys are 1 to 250 bytes without spaces or control characters")

// LegalKey reports whether memcached accepts key in the text protocol: 1
// to MaxKeyLen bytes, none of them a space or a control character. Every
// key given to a Writer must be legal: a key with a space or a line break
// in it would end the command early, and what follows would be read as
// other commands.
func LegalKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// Expiration returns memcached's expiration for an item written at now that
// lives ttl: ttl in seconds, rounded up and at least one (zero would mean
// never), or, past 30 days, the Unix time it ends, which memcached requires
// for those (capped at the largest int32).
func Expiration(ttl time.Duration, now time.Time) int32 {
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	secs = max(secs, 1)
	if secs <= maxRelativeExpiration {
		return int32(secs)
	}
	return int32(min(now.Unix()+secs, math.MaxInt32))
}

// answerError reports line as an answer that is not what cmd expects, such
// as memcached's CLIENT_ERROR for an increment of a value that is not a
// number. A long line is cut at 200 bytes.
func answerError(cmd string, line []byte) error {
	l := string(line)
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	return fmt.Errorf("%w to %s: %q", ErrAnswer, cmd, l)
}

// malformed reports an answer to cmd that is wrong in the way format says.
func malformed(cmd, format string, args ...any) error {
	return fmt.Errorf("%w to %s: %s", ErrAnswer, cmd, fmt.Sprintf(format, args...))
}
