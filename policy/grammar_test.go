package policy_test

import (
	"fmt"
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
	const unknown = `unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`
	const noPath = "want <filter>:<path>, as in envoy.filters.http.jwt_authn:payload.sub"
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
		{in: "principal", want: "principal"},
		{in: "Principal", wantErr: unknown},
		{in: "principal:x", wantErr: unknown},
		{in: "metadata:envoy.filters.http.jwt_authn:payload.sub", want: "metadata:envoy.filters.http.jwt_authn:payload.sub"},
		{in: "metadata:Lua:Plan", want: "metadata:Lua:Plan"}, // metadata is case-sensitive: kept
		{in: "metadata", wantErr: unknown},
		{in: "metadata:", wantErr: noPath},
		{in: "metadata:jwt", wantErr: noPath},
		{in: "metadata::sub", wantErr: `metadata filter "": length 0: must be 1 to 128`},
		{in: "metadata:jwt:", wantErr: `metadata path "": name of length 0: must be 1 to 64`},
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

func TestParseMetadataField(t *testing.T) {
	t.Parallel()
	token := "want letters, digits and !#$%&'*+-.^_`|~"
	long := strings.Repeat("n", policy.MaxNameLen)
	tests := []struct {
		in      string
		filter  string
		path    string
		wantErr string
	}{
		{in: "envoy.filters.http.jwt_authn:payload.sub", filter: "envoy.filters.http.jwt_authn", path: "payload.sub"},
		{in: "f:a", filter: "f", path: "a"},
		{in: "istio_authn-2:Request.Auth.Principal", filter: "istio_authn-2", path: "Request.Auth.Principal"},
		{in: "f:a!#$%&'*+-^_`|~z", filter: "f", path: "a!#$%&'*+-^_`|~z"},
		{in: "f:" + long, filter: "f", path: long},
		{in: strings.Repeat("f", policy.MaxMetadataFilterLen) + ":a", filter: strings.Repeat("f", policy.MaxMetadataFilterLen), path: "a"},
		{in: "f:a.b.c.d.e.f.g.h", filter: "f", path: "a.b.c.d.e.f.g.h"},

		{in: "", wantErr: "want <filter>:<path>, as in envoy.filters.http.jwt_authn:payload.sub"},
		{in: "envoy.filters.http.jwt_authn", wantErr: "want <filter>:<path>, as in envoy.filters.http.jwt_authn:payload.sub"},
		{in: ":sub", wantErr: `metadata filter "": length 0: must be 1 to 128`},
		{in: strings.Repeat("f", 129) + ":a", wantErr: `metadata filter "` + strings.Repeat("f", 129) + `": length 129: must be 1 to 128`},
		{in: "jwt authn:sub", wantErr: `metadata filter "jwt authn": invalid character ' ': want [A-Za-z0-9_.-]`},
		{in: "jwt/authn:sub", wantErr: `metadata filter "jwt/authn": invalid character '/': want [A-Za-z0-9_.-]`},
		{in: "f:", wantErr: `metadata path "": name of length 0: must be 1 to 64`},
		{in: "f:a..b", wantErr: `metadata path "a..b": name of length 0: must be 1 to 64`},
		{in: "f:.a", wantErr: `metadata path ".a": name of length 0: must be 1 to 64`},
		{in: "f:a.", wantErr: `metadata path "a.": name of length 0: must be 1 to 64`},
		{in: "f:" + long + "n", wantErr: `metadata path "` + long + `n": name of length 65: must be 1 to 64`},
		{in: "f:a.b.c.d.e.f.g.h.i", wantErr: `metadata path "a.b.c.d.e.f.g.h.i": 9 names: must be at most 8`},
		{in: "f:" + strings.Repeat("a.", 64<<10) + "a", wantErr: `metadata path "` + strings.Repeat("a.", 64<<10) + `a": 65537 names: must be at most 8`},
		{in: "f:a:b", wantErr: `metadata path "a:b": invalid character ':': ` + token},
		{in: "f:a b", wantErr: `metadata path "a b": invalid character ' ': ` + token},
		{in: "f:https://x", wantErr: `metadata path "https://x": invalid character ':': ` + token},
		{in: "f:ünï", wantErr: `metadata path "ünï": invalid character 'ü': ` + token},
		{in: "f:a\x00", wantErr: `metadata path "a\x00": invalid character '\x00': ` + token},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40s", tt.in), func(t *testing.T) {
			t.Parallel()
			got, err := policy.ParseMetadataField(tt.in)
			if errString(err) != tt.wantErr {
				t.Fatalf("ParseMetadataField(%.60q) error %.200q, want %.200q", tt.in, errString(err), tt.wantErr)
			}
			if err != nil {
				if got != (policy.MetadataField{}) {
					t.Errorf("ParseMetadataField(%q) = %+v with an error, want the zero field", tt.in, got)
				}
				return
			}
			if got != (policy.MetadataField{Filter: tt.filter, Path: tt.path}) {
				t.Errorf("ParseMetadataField(%q) = %q %q, want %q %q", tt.in, got.Filter, got.Path, tt.filter, tt.path)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want the input %q", got.String(), tt.in)
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

func TestCeilSeconds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Nanosecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{59*time.Second + 500*time.Millisecond, 60},
	} {
		if got := policy.CeilSeconds(tt.d); got != tt.want {
			t.Errorf("CeilSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
