package authz_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy"
)

// TestInvalidOverrideWords checks that an invalid context extension is
// refused by the grammar of package policy, in its words: the log line of
// an invalid floodgate.window, floodgate.key or floodgate.scope carries
// the very error that --window, --key and the policy file report.
func TestInvalidOverrideWords(t *testing.T) {
	t.Parallel()
	_, windowSyntax := policy.ParseWindow("forever")
	_, windowBounds := policy.ParseWindow("500ms")
	_, keyForm := policy.ParseKey("cookie:session")
	_, keyHeader := policy.ParseKey("header:x user")
	tests := []struct {
		name, value string
		want        string // the logged error
	}{
		{"floodgate.window", "forever", windowSyntax.Error()},
		{"floodgate.window", "500ms", windowBounds.Error()},
		{"floodgate.window", "25h", windowBounds.Error()},
		{"floodgate.key", "cookie:session", `parse key "cookie:session": ` + keyForm.Error()},
		{"floodgate.key", "header:x user", `parse key "header:x user": ` + keyHeader.Error()},
		{"floodgate.scope", "my scope", policy.CheckScope("my scope").Error()},
		{"floodgate.scope", strings.Repeat("s", 65), policy.CheckScope(strings.Repeat("s", 65)).Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, &fakeStrategy{}, baseConfig())
			h.check(t, fromIP(map[string]string{tt.name: tt.value}))
			want := fmt.Sprintf("error=%s", strconv.Quote(tt.want))
			if n := h.logs.CountLines("invalid context extension", "name="+tt.name, want); n != 1 {
				t.Errorf("want one log line with %s; logs:\n%s", want, h.logs)
			}
		})
	}
}
