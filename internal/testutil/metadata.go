package testutil

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// Metadata returns the dynamic metadata a test expects floodgate to set:
// the string fields kv lists in pairs (key, value), and remaining as a
// number under remainingKey (authz.MetaRemaining) when it is not negative.
func Metadata(tb testing.TB, remainingKey string, remaining int, kv ...string) *structpb.Struct {
	tb.Helper()
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	if remaining >= 0 {
		m[remainingKey] = remaining
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
