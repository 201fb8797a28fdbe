package rls_test

import (
	"slices"
	"testing"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

// desc builds a descriptor from key, value pairs.
func desc(kv ...string) []rls.Entry {
	var es []rls.Entry
	for i := 0; i+1 < len(kv); i += 2 {
		es = append(es, rls.Entry{Key: kv[i], Value: kv[i+1]})
	}
	return es
}

// want is what a matched rule must be; a nil *want is no rule.
type want struct {
	rpu       uint32
	unit      rls.Unit
	unlimited bool
	shadow    bool
	name      string
	replaces  []string
	key       string // Limit.Key
	metric    string // MetricKey of the descriptor; "" means Key
}

func mustLoad(t testing.TB, path string) *rls.Config {
	t.Helper()
	c, err := rls.Load(path)
	if err != nil {
		t.Fatalf("Load(%s):\n%v", path, err)
	}
	return c
}

func checkLimit(t *testing.T, l *rls.Limit, entries []rls.Entry, w *want) {
	t.Helper()
	if w == nil {
		if l != nil {
			t.Fatalf("matched %s (%d/%s), want no rule", l.Key, l.RequestsPerUnit, l.Unit)
		}
		return
	}
	if l == nil {
		t.Fatalf("no rule, want %s", w.key)
	}
	if l.RequestsPerUnit != w.rpu || l.Unit != w.unit || l.Unlimited != w.unlimited || l.ShadowMode != w.shadow ||
		l.Name != w.name || !slices.Equal(l.Replaces, w.replaces) || l.Key != w.key {
		t.Fatalf("got %d/%s unlimited=%v shadow=%v name=%q replaces=%q key=%q\nwant %d/%s unlimited=%v shadow=%v name=%q replaces=%q key=%q",
			l.RequestsPerUnit, l.Unit, l.Unlimited, l.ShadowMode, l.Name, l.Replaces, l.Key,
			w.rpu, w.unit, w.unlimited, w.shadow, w.name, w.replaces, w.key)
	}
	metric := w.metric
	if metric == "" {
		metric = w.key
	}
	if got := l.MetricKey(entries); got != metric {
		t.Fatalf("MetricKey = %q, want %q", got, metric)
	}
}

// TestREADMEExamples matches descriptors against each example of
// envoyproxy/ratelimit's README "Configuration" section, asserting the
// behaviour the README documents for it.
func TestREADMEExamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		domain  string
		entries []rls.Entry
		want    *want
	}{
		// Example 1: two values of one key, 500/s each; another value has no rule.
		{"1 users", "example1.yaml", "mongo_cps", desc("database", "users"), &want{rpu: 500, unit: rls.UnitSecond, key: "mongo_cps.database_users"}},
		{"1 default", "example1.yaml", "mongo_cps", desc("database", "default"), &want{rpu: 500, unit: rls.UnitSecond, key: "mongo_cps.database_default"}},
		{"1 other value", "example1.yaml", "mongo_cps", desc("database", "orders"), nil},
		{"1 other domain", "example1.yaml", "mongo", desc("database", "users"), nil},
		{"1 key is case-sensitive", "example1.yaml", "mongo_cps", desc("Database", "users"), nil},

		// Example 2: nested descriptors; the top one is a placeholder.
		{"2 marketing to a number", "example2.yaml", "messaging", desc("message_type", "marketing", "to_number", "2061111111"),
			&want{rpu: 5, unit: rls.UnitDay, key: "messaging.message_type_marketing.to_number"}},
		{"2 any number", "example2.yaml", "messaging", desc("to_number", "2062222222"), &want{rpu: 100, unit: rls.UnitDay, key: "messaging.to_number"}},
		{"2 placeholder alone", "example2.yaml", "messaging", desc("message_type", "marketing"), nil},
		{"2 other message type", "example2.yaml", "messaging", desc("message_type", "transactional", "to_number", "2061111111"), nil},

		// Example 3: key and value before key alone.
		{"3 any address", "example3.yaml", "edge_proxy_per_ip", desc("remote_address", "50.0.0.1"), &want{rpu: 10, unit: rls.UnitSecond, key: "edge_proxy_per_ip.remote_address"}},
		{"3 blocked address", "example3.yaml", "edge_proxy_per_ip", desc("remote_address", "50.0.0.5"), &want{rpu: 0, unit: rls.UnitSecond, key: "edge_proxy_per_ip.remote_address_50.0.0.5"}},

		// Example 4: the request's depth must be the configuration's.
		{"4 deeper request", "example4a.yaml", "example4", desc("key", "value", "subkey", "subvalue"), nil},
		{"4 same depth", "example4a.yaml", "example4", desc("key", "value"), &want{rpu: 300, unit: rls.UnitSecond, key: "example4.key_value"}},
		{"4 nested", "example4b.yaml", "example4", desc("key", "value", "subkey", "subvalue"), &want{rpu: 300, unit: rls.UnitSecond, key: "example4.key_value.subkey"}},
		{"4 shallower request", "example4b.yaml", "example4", desc("key", "value"), nil},

		// Example 5: unlimited has no unit and no count.
		{"5 unlimited", "example5.yaml", "internal", desc("ldap", "cn=admin"), &want{unlimited: true, key: "internal.ldap"}},
		{"5 limited", "example5.yaml", "internal", desc("azure", "blob"), &want{rpu: 100, unit: rls.UnitMinute, key: "internal.azure"}},
		{"5 not configured", "example5.yaml", "internal", desc("github", "x"), nil},

		// Example 6: shadow_mode on one user only.
		{"6 shadow user", "example6.yaml", "example6", desc("service", "auth-service", "user", "user-a"),
			&want{rpu: 10, unit: rls.UnitSecond, shadow: true, key: "example6.service.user_user-a"}},
		{"6 enforced user", "example6.yaml", "example6", desc("service", "auth-service", "user", "user-b"),
			&want{rpu: 20, unit: rls.UnitSecond, key: "example6.service.user_user-b"}},
		{"6 other user", "example6.yaml", "example6", desc("service", "auth-service", "user", "user-c"), nil},

		// Example 7: the rules themselves (replaces: TestExample7Replaces).
		{"7 named", "example7.yaml", "example7", desc("key_1", "value_1", "user", "bkthomps"),
			&want{rpu: 5, unit: rls.UnitSecond, name: "specific_limit", key: "example7.key_1_value_1.user_bkthomps"}},
		{"7 replacing", "example7.yaml", "example7", desc("key_2", "value_2", "user", "bkthomps"),
			&want{rpu: 10, unit: rls.UnitSecond, replaces: []string{"specific_limit"}, key: "example7.key_2_value_2.user_bkthomps"}},

		// Example 8: detailed_metric names the unspecified value.
		{"8 unspecified value", "example8.yaml", "example8", desc("key1", "unspecified_value"),
			&want{rpu: 10, unit: rls.UnitMinute, key: "example8.key1", metric: "example8.key1_unspecified_value"}},
		{"8 unspecified value 2", "example8.yaml", "example8", desc("key1", "unspecified_value2"),
			&want{rpu: 10, unit: rls.UnitMinute, key: "example8.key1", metric: "example8.key1_unspecified_value2"}},
		{"8 specified value", "example8.yaml", "example8", desc("key1", "value1"), &want{rpu: 20, unit: rls.UnitMinute, key: "example8.key1_value1"}},

		// Example 9: a wildcard value.
		{"9 value_1", "example9.yaml", "example9", desc("key1", "value_1"), &want{rpu: 20, unit: rls.UnitMinute, key: "example9.key1_value*"}},
		{"9 value_2", "example9.yaml", "example9", desc("key1", "value_2"), &want{rpu: 20, unit: rls.UnitMinute, key: "example9.key1_value*"}},
		{"9 the prefix alone", "example9.yaml", "example9", desc("key1", "value"), &want{rpu: 20, unit: rls.UnitMinute, key: "example9.key1_value*"}},
		{"9 no match", "example9.yaml", "example9", desc("key1", "valu"), nil},

		// Example 10: value_to_metric names the runtime values.
		{"10 api GET", "example10.yaml", "domain", desc("route", "api", "http_method", "GET", "subject_id", "123"),
			&want{rpu: 60, unit: rls.UnitMinute, key: "domain.route.http_method.subject_id", metric: "domain.route_api.http_method_GET.subject_id"}},
		{"10 web POST", "example10.yaml", "domain", desc("route", "web", "http_method", "POST", "subject_id", "456"),
			&want{rpu: 60, unit: rls.UnitMinute, key: "domain.route.http_method.subject_id", metric: "domain.route_web.http_method_POST.subject_id"}},

		// Example 11: share_threshold (counters: TestCounterKeys).
		{"11 shared", "example11.yaml", "example11", desc("files", "files/a.pdf"), &want{rpu: 100, unit: rls.UnitHour, key: "example11.files_files/*"}},
		{"11 not shared", "example11.yaml", "example11", desc("models", "models/gpt"), &want{rpu: 100, unit: rls.UnitHour, key: "example11.models_models/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, "testdata/"+tc.file)
			checkLimit(t, c.Match(tc.domain, tc.entries), tc.entries, tc.want)
		})
	}
}

// TestExample7Replaces: a request with both descriptors is limited by the
// replacing rule only; a request with one keeps its rule.
func TestExample7Replaces(t *testing.T) {
	c := mustLoad(t, "testdata/example7.yaml")
	a := c.Match("example7", desc("key_1", "value_1", "user", "bkthomps"))
	b := c.Match("example7", desc("key_2", "value_2", "user", "bkthomps"))
	if a == nil || b == nil {
		t.Fatalf("rules %v %v", a, b)
	}
	for _, tc := range []struct {
		name       string
		limits     []*rls.Limit
		want       []*rls.Limit
		unreplaced bool
	}{
		{"both", []*rls.Limit{a, b}, []*rls.Limit{nil, b}, false},
		{"both, other order", []*rls.Limit{b, a}, []*rls.Limit{b, nil}, false},
		{"named alone", []*rls.Limit{a}, []*rls.Limit{a}, true},
		{"replacing alone", []*rls.Limit{b}, []*rls.Limit{b}, true},
		{"with no rule", []*rls.Limit{nil, a, nil}, []*rls.Limit{nil, a, nil}, true},
		{"twice", []*rls.Limit{a, a, b}, []*rls.Limit{nil, nil, b}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slices.Clone(tc.limits)
			rls.ApplyReplaces(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestApplyReplacesMany covers a request with more descriptors than the
// function's fixed buffer.
func TestApplyReplacesMany(t *testing.T) {
	c := mustLoad(t, "testdata/example7.yaml")
	a := c.Match("example7", desc("key_1", "value_1", "user", "bkthomps"))
	b := c.Match("example7", desc("key_2", "value_2", "user", "bkthomps"))
	limits := make([]*rls.Limit, 20)
	for i := range limits {
		limits[i] = a
	}
	limits[19] = b
	rls.ApplyReplaces(limits)
	for i, l := range limits[:19] {
		if l != nil {
			t.Fatalf("limits[%d] kept, want replaced", i)
		}
	}
	if limits[19] != b {
		t.Fatal("the replacing rule was dropped")
	}
}

// TestCounterKeys: which descriptors count against one counter. A rule
// matched by key alone or by wildcard counts each value apart (Example 2:
// each number gets its own 5 a day; Example 9); share_threshold makes the
// values of its wildcard share one (Example 11).
func TestCounterKeys(t *testing.T) {
	for _, tc := range []struct {
		name   string
		file   string
		domain string
		a, b   []rls.Entry
		same   bool
	}{
		{"2 numbers apart", "example2.yaml", "messaging", desc("message_type", "marketing", "to_number", "2061111111"), desc("message_type", "marketing", "to_number", "2062222222"), false},
		{"2 one number twice", "example2.yaml", "messaging", desc("to_number", "2061111111"), desc("to_number", "2061111111"), true},
		{"3 addresses apart", "example3.yaml", "edge_proxy_per_ip", desc("remote_address", "50.0.0.1"), desc("remote_address", "50.0.0.2"), false},
		{"9 wildcard values apart", "example9.yaml", "example9", desc("key1", "value_1"), desc("key1", "value_2"), false},
		{"11 shared", "example11.yaml", "example11", desc("files", "files/a.pdf"), desc("files", "files/b.csv"), true},
		{"11 shared with the pattern itself", "example11.yaml", "example11", desc("files", "files/a.pdf"), desc("files", "files/*"), true},
		{"11 not shared", "example11.yaml", "example11", desc("models", "models/a"), desc("models", "models/b"), false},
		{"10 runtime values apart", "example10.yaml", "domain", desc("route", "api", "http_method", "GET", "subject_id", "1"), desc("route", "api", "http_method", "GET", "subject_id", "2"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, "testdata/"+tc.file)
			la, lb := c.Match(tc.domain, tc.a), c.Match(tc.domain, tc.b)
			if la == nil || lb == nil {
				t.Fatalf("no rule: %v %v", la, lb)
			}
			ka, kb := la.CounterKey(tc.a), lb.CounterKey(tc.b)
			if (ka == kb) != tc.same {
				t.Fatalf("keys %q and %q: same=%v, want %v", ka, kb, ka == kb, tc.same)
			}
			if got := string(la.AppendCounterKey([]byte("x"), tc.a)); got != "x"+ka {
				t.Fatalf("AppendCounterKey = %q, want %q", got, "x"+ka)
			}
		})
	}
}

// TestCounterKeyUnambiguous: keys and values that join to the same string
// with the peer's "_" still give distinct counters.
func TestCounterKeyUnambiguous(t *testing.T) {
	keys := map[string][]rls.Entry{}
	for _, es := range [][]rls.Entry{
		desc("a_b", "c"), desc("a", "b_c"), desc("a", "b", "c", ""), desc("a", "bc"), desc("ab", "c"),
		desc("a", ""), desc("a", "", "", ""), desc("", "a"), nil,
	} {
		k := rls.CounterKey("d", es)
		if prev, dup := keys[k]; dup {
			t.Fatalf("%v and %v share key %q", prev, es, k)
		}
		keys[k] = es
	}
	if rls.CounterKey("d_a", nil) == rls.CounterKey("d", desc("a", "")) {
		t.Fatal("domain and entry confused")
	}
}

// TestDomains lists the domains of a directory, sorted, and its rules.
func TestDomains(t *testing.T) {
	c := mustLoad(t, "testdata/dir")
	if got, want := c.Domains(), []string{"alpha", "beta"}; !slices.Equal(got, want) {
		t.Fatalf("Domains() = %q, want %q", got, want)
	}
	var keys []string
	for _, l := range c.Limits() {
		keys = append(keys, l.Key)
	}
	if want := []string{"alpha.a", "alpha.b", "beta.x"}; !slices.Equal(keys, want) {
		t.Fatalf("Limits() keys = %q, want %q", keys, want)
	}
	if c.Digest == "" {
		t.Fatal("no digest")
	}
	again := mustLoad(t, "testdata/dir")
	if again.Digest != c.Digest {
		t.Fatal("digest differs between two loads")
	}
	one := mustLoad(t, "testdata/dir/b.yml")
	if one.Digest == c.Digest {
		t.Fatal("digest of one file equals the directory's")
	}
}

func TestUnit(t *testing.T) {
	for _, tc := range []struct {
		u    rls.Unit
		s    string
		secs int
	}{{rls.UnitSecond, "second", 1}, {rls.UnitMinute, "minute", 60}, {rls.UnitHour, "hour", 3600}, {rls.UnitDay, "day", 86400}, {0, "", 0}} {
		if tc.u.String() != tc.s || int(tc.u.Window().Seconds()) != tc.secs {
			t.Errorf("unit %d: %q %v, want %q %ds", tc.u, tc.u.String(), tc.u.Window(), tc.s, tc.secs)
		}
	}
}
