package testutil

import (
	"fmt"
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { fmt.Fprintf(&b, "level=INFO msg=hello n=%d\n", i) })
	}
	wg.Go(func() { _ = b.String() }) // a read while others write
	wg.Wait()
	fmt.Fprintf(&b, "level=WARN msg=hello n=9\n")
	for _, tc := range []struct {
		subs []string
		want int
	}{
		{nil, 5},
		{[]string{"msg=hello"}, 5},
		{[]string{"msg=hello", "level=INFO"}, 4},
		{[]string{"level=WARN", "n=9"}, 1},
		{[]string{"level=WARN", "n=1"}, 0},
	} {
		if got := b.CountLines(tc.subs...); got != tc.want {
			t.Errorf("CountLines(%q) = %d, want %d", tc.subs, got, tc.want)
		}
	}
}
