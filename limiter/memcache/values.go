package memcache

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate-rl/floodgate/limiter/memcache/internal/wire"
)

// Values: the state of the token-bucket and sliding-log strategies.
//
// A value is read with a meta get asking for its CAS unique, which
// memcached changes on every write and which is its version, and for its
// key, which the answer must repeat. It is written with a meta set: in add
// mode for version 0, which stores only when the key is missing, otherwise
// with the version as the CAS unique the item must still have. Both go
// over the server's pipeline, like the counters: one pool of connections
// per server, and concurrent calls share round trips.

// GetVersioned implements limiter.Store with one meta get; the item's
// CAS unique is the version. A missing key returns nil, 0 and no error. It
// needs memcached's CAS support, which is on unless the server runs with
// -C; without it GetVersioned fails.
func (s *Store) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	op := &valueOp{kind: valueGet, key: key}
	if err := s.value(ctx, "gets", op); err != nil || !op.ok {
		return nil, 0, err
	}
	return op.item.Value, op.item.CAS, nil
}

// CompareAndSwap implements limiter.Store with one meta set. Version 0
// is an add, which stores only when the key is missing; any other version
// stores only when the item's CAS unique is still version. Either sets the
// item's expiration to ttl from now. A refused write (NS to an add: the key
// exists; EX to a swap: the item was written since; NF to a swap: it
// expired or was evicted since) returns false and no error; any other
// answer is an error. A value longer than 64 KiB is refused unsent.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	name := "cas"
	if version == 0 {
		name = "add"
	}
	if len(value) > wire.MaxValueLen {
		return false, opError(name, key, fmt.Errorf("value of %d bytes: at most %d", len(value), wire.MaxValueLen))
	}
	op := &valueOp{kind: valueSwap, key: key, value: value, version: version, ttl: ttl}
	if err := s.value(ctx, name, op); err != nil {
		return false, err
	}
	return op.ok, nil
}

// value sends op, a value command named name in errors, to the server of
// its key, and sets op's answer.
func (s *Store) value(ctx context.Context, name string, op *valueOp) error {
	if err := ctx.Err(); err != nil {
		return opError(name, op.key, err)
	}
	if !wire.LegalKey(op.key) {
		return opError(name, op.key, wire.ErrMalformedKey)
	}
	srv := s.set.Load().pick(serverKey(op.key))
	if srv == nil {
		return opError(name, op.key, errNoServers)
	}
	if err := srv.pipe.value(ctx, op, s.now()); err != nil {
		return opError(name, op.key, err)
	}
	return nil
}
