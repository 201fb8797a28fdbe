package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// The grammar's tests pin the exact words: flags, context extensions and
// the policy file all report these, each behind its own prefix.

func TestCheckScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // the error; "" for valid
	}{
		{"login", ""},
		{"A-z_0.9", ""},
		{strings.Repeat("s", policy.MaxNameLen), ""},
		{"", "length 0: must be 1 to 64"},
		{strings.Repeat("s", 65), "length 65: must be 1 to 64"},
		{strings.Repeat("s", 64<<10), "length 65536: must be 1 to 64"},
		{"my scope", `invalid character ' ': want [A-Za-z0-9_.-]`},
		{"a/b", `invalid character '/': want [A-Za-z0-9_.-]`},
		{`a"b`, `invalid character '"': want [A-Za-z0-9_.-]`},
		{"ünï", `invalid character 'ü': want [A-Za-z0-9_.-]`},
		{"a\xffb", "invalid character '\uFFFD': want [A-Za-z0-9_.-]"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := errString(policy.CheckScope(tt.in)); got != tt.want {
				t.Errorf("CheckScope(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHeaderName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "x-api-key", want: "x-api-key"},
		{in: "X-API-Key", want: "x-api-key"},
		{in: ":authority", want: ":authority"},
		{in: "!#$%&'*+-.^_`|~", want: "!#$%&'*+-.^_`|~"},
		{in: "", wantErr: "empty header name"},
		{in: ":", wantErr: "empty header name"},
		{in: "x api", wantErr: `header name "x api": invalid character ' ': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{in: "a:b", wantErr: `header name "a:b": invalid character ':': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{in: "x-ünï", wantErr: `header name "x-ünï": invalid character 'ü': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{in: "::a", wantErr: `header name "::a": invalid character ':': want letters, digits and !#$%&'*+-.^_` + "`|~"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := policy.HeaderName(tt.in)
			if got != tt.want || errString(err) != tt.wantErr {
				t.Errorf("HeaderName(%q) = %q, %q; want %q, %q", tt.in, got, errString(err), tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseKeyGrammar(t *testing.T) {
	t.Parallel()
	const unknown = `unknown form: want "source", "header:<name>" or "xff"`
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "source", want: "source"},
		{in: "xff", want: "xff"},
		{in: "header:X-Api-Key", want: "header:x-api-key"},
		{in: "header::authority", want: "header::authority"},
		{in: "", wantErr: unknown},
		{in: "Source", wantErr: unknown},
		{in: "xff:1", wantErr: unknown},
		{in: "header", wantErr: unknown},
		{in: "cookie:session", wantErr: unknown},
		{in: "header:", wantErr: "empty header name"},
		{in: "header::", wantErr: "empty header name"},
		{in: "header:x y", wantErr: `header name "x y": invalid character ' ': want letters, digits and !#$%&'*+-.^_` + "`|~"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := policy.ParseKey(tt.in)
			if got != tt.want || errString(err) != tt.wantErr {
				t.Errorf("ParseKey(%q) = %q, %q; want %q, %q", tt.in, got, errString(err), tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	t.Parallel()
	const (
		syntax = "not a duration such as 60s or 1h"
		bounds = "must be a whole number of seconds from 1s to 24h"
	)
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "1s", want: time.Second},
		{in: "90s", want: 90 * time.Second},
		{in: "1m30s", want: 90 * time.Second},
		{in: "1h", want: time.Hour},
		{in: "3600s", want: time.Hour},
		{in: "24h", want: limiter.MaxWindow},
		{in: "86400s", want: limiter.MaxWindow},
		{in: "1000ms", want: time.Second},
		{in: "", wantErr: syntax},
		{in: "60", wantErr: syntax},
		{in: "hour", wantErr: syntax},
		{in: "1 h", wantErr: syntax},
		{in: "0", wantErr: bounds},
		{in: "0s", wantErr: bounds},
		{in: "-1s", wantErr: bounds},
		{in: "500ms", wantErr: bounds},
		{in: "1.5s", wantErr: bounds},
		{in: "25h", wantErr: bounds},
		{in: "24h0m1s", wantErr: bounds},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := policy.ParseWindow(tt.in)
			if got != tt.want || errString(err) != tt.wantErr {
				t.Errorf("ParseWindow(%q) = %v, %q; want %v, %q", tt.in, got, errString(err), tt.want, tt.wantErr)
			}
			// One rule: what ParseWindow accepts, the limiter accepts.
			if verr := (limiter.Request{Limit: 1, Window: got}).Validate(); (err == nil) != (verr == nil) {
				t.Errorf("ParseWindow(%q) error %v, but limiter.Request.Validate says %v", tt.in, err, verr)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "1h"},
		{24 * time.Hour, "24h"},
		{2*time.Hour + 30*time.Minute, "2h30m"},
		{90 * time.Second, "1m30s"},
		{time.Minute, "1m"},
		{45 * time.Second, "45s"},
		{24*time.Hour + time.Second, "24h0m1s"},
		{100 * time.Millisecond, "100ms"},
		{0, "0s"},
	}
	for _, tt := range tests {
		if got := policy.FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
