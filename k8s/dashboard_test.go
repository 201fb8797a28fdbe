package k8s_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

const dashboardPath = "grafana/floodgate-dashboard.json"

// The parts of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *grafanaDS               `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		Datasource *grafanaDS `json:"datasource"`
		Expr       string     `json:"expr"`
		RefID      string     `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return &d
}

// allPanels returns the panels of d, those of collapsed rows included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	Where string
	Expr  string
}

// labelValuesQuery matches a Grafana variable query label_values(metric, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// queries returns every PromQL expression of d: panel targets, and the
// metric of each label_values() variable query.
func (d *dashboard) queries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, query{"panel " + p.Title + " " + tg.RefID, tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		var obj struct{ Query string }
		if json.Unmarshal(v.Query, &obj) == nil && obj.Query != "" {
			q = obj.Query
		} else if json.Unmarshal(v.Query, &q) != nil {
			t.Fatalf("variable %s: query %s", v.Name, v.Query)
		}
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q)
			continue
		}
		// label_values(m, l) asks for the series of m that have l: the same
		// as the selector m{l!=""}.
		sel := m[1]
		if strings.HasSuffix(sel, "}") {
			sel = strings.TrimSuffix(sel, "}") + `, ` + m[2] + `!=""}`
		} else {
			sel += `{` + m[2] + `!=""}`
		}
		out = append(out, query{"variable " + v.Name, sel})
	}
	return out
}

// grafanaVars replaces Grafana's interval variables, which PromQL does not
// know, by durations, and the dashboard's variables of floodgate's label
// values ($scope) by what "All" selects, ".*". (Variables of labels
// Prometheus adds, such as "$namespace", are strings to PromQL and stay.)
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "${__range}", "1h", "$scope", ".*")

// TestDashboard checks the dashboard's structure: JSON with a uid and a
// title, a Prometheus data source variable every panel and query uses,
// unique panel ids, panels that fit the 24-column grid without overlapping,
// every panel with at least one query, and every query valid PromQL.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: both must be set", d.UID, d.Title)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		var q string
		if v.Name == "datasource" && v.Type == "datasource" && json.Unmarshal(v.Query, &q) == nil && q == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no templating variable datasource of type datasource, query prometheus")
	}
	ids := make(map[int]bool)
	type rect struct{ x, y, w, h int }
	var placed []rect
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v does not fit the 24-column grid", p.Title, g)
		}
		r := rect{g.X, g.Y, g.W, g.H}
		for _, o := range placed {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				t.Errorf("panel %q at %+v overlaps another panel at %+v", p.Title, g, o)
			}
		}
		placed = append(placed, r)
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		refs := make(map[string]bool)
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or used twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
	p := parser.NewParser(parser.Options{})
	for _, q := range d.queries(t) {
		if _, err := p.ParseExpr(grafanaVars.Replace(q.Expr)); err != nil {
			t.Errorf("%s: %q: %v", q.Where, q.Expr, err)
		}
	}
}

// targetLabels are the labels Prometheus adds to every series it scrapes
// from a Kubernetes pod (the usual relabelling), which floodgate's /metrics
// therefore does not show.
var targetLabels = []string{"job", "instance", "namespace", "pod"}

// family is a metric family of floodgate's /metrics: its type, and the
// values each label has.
type family struct {
	Type   dto.MetricType
	Labels map[string][]string
}

// dashboardPolicy is the policy file of the scraped floodgate: an
// enforcing rule and a shadow rule, so that the series by rule exist.
const dashboardPolicy = `
rules:
- name: login-trial
  shadow: true
  match: {scope: login}
  limit: 3
  window: 1m
- name: login
  match: {scope: login}
  limit: 5
  window: 1m
`

// dashboardRLSConfig is the --rls-config of the scraped floodgate.
const dashboardRLSConfig = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 100}
`

// scrapeFloodgate starts the real floodgate and returns the metric families
// of its /metrics, in Prometheus's text format.
func scrapeFloodgate(t *testing.T) map[string]*family {
	t.Helper()
	// On memcached, with a policy file and an RLS configuration, as the
	// dashboard's deployments are: some metrics exist only with them.
	dir := t.TempDir()
	pol, rlsConf := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "rls.yaml")
	for path, src := range map[string]string{pol: dashboardPolicy, rlsConf: dashboardRLSConfig} {
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mc := testutil.StartMemcached(t)
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--policy", pol, "--rls-config", rlsConf)
	req, err := http.NewRequest("GET", fg.AdminURL()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := make(map[string]*family)
	for name, mf := range mfs {
		f := &family{Type: mf.GetType(), Labels: make(map[string][]string)}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(f.Labels[lp.GetName()], lp.GetValue()) {
					f.Labels[lp.GetName()] = append(f.Labels[lp.GetName()], lp.GetValue())
				}
			}
		}
		out[name] = f
	}
	return out
}

// series resolves a series name a query selects to floodgate's metric
// family: the family itself for a counter, gauge or untyped metric, or for
// a histogram its _bucket, _sum and _count series (_bucket with the le
// label). It returns the family's name and whether the series is buckets.
func series(fams map[string]*family, name string) (string, *family, bool, bool) {
	if f, ok := fams[name]; ok {
		switch f.Type {
		case dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY:
			return name, f, false, false // the base name of a histogram is no series
		}
		return name, f, false, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := fams[base]; ok && (f.Type == dto.MetricType_HISTOGRAM || (f.Type == dto.MetricType_SUMMARY && suffix != "_bucket")) {
			return base, f, suffix == "_bucket", true
		}
	}
	return "", nil, false, false
}

// TestDashboardMetricsExist starts the real floodgate, reads its /metrics,
// and checks every query of the dashboard against it: each series it
// selects exists (a histogram through _bucket, _sum or _count); each label
// it matches or groups by is one the series has (or one Prometheus adds
// when scraping a pod, or le of buckets); each label value it matches with
// = exists, and each regular expression matches some value (=~) or leaves
// some (!~); rate() and increase() take counters or histogram series only;
// histogram_quantile() takes buckets grouped by le. The dashboard must
// query every metric of the list below: decisions (by result, scope and
// rule), latency, the store, the breaker, the fallback, the policy's
// shadow rules and reloads, and the RLS API.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	fams := scrapeFloodgate(t)
	d := readDashboard(t)
	p := parser.NewParser(parser.Options{})
	used := make(map[string]bool)
	for _, q := range d.queries(t) {
		expr, err := p.ParseExpr(grafanaVars.Replace(q.Expr))
		if err != nil {
			t.Errorf("%s: %q: %v", q.Where, q.Expr, err)
			continue
		}
		checkQuery(t, q, expr, fams, used)
	}
	for _, name := range []string{
		"floodgate_decisions_total",
		"floodgate_check_duration_seconds",
		"floodgate_store_operations_total",
		"floodgate_store_errors_total",
		"floodgate_store_duration_seconds",
		"floodgate_store_keys_read_total",
		"floodgate_memcache_round_trips_total",
		"floodgate_memcache_evictions_total",
		"floodgate_memcache_bytes",
		"floodgate_memcache_limit_bytes",
		"floodgate_invalid_overrides_total",
		"floodgate_check_panics_total",
		"floodgate_degraded_decisions_total",
		"floodgate_store_breaker_state",
		"floodgate_store_breaker_transitions_total",
		"floodgate_fallback_reconciled_total",
		"floodgate_fallback_unreconciled_total",
		"floodgate_shadow_denials_total",
		"floodgate_policy_reloads_total",
		"floodgate_policy_last_reload_success_timestamp_seconds",
		"floodgate_rls_decisions_total",
		"floodgate_rls_config_reloads_total",
	} {
		if _, ok := fams[name]; !ok {
			t.Errorf("floodgate's /metrics has no %s", name)
		}
		if !used[name] {
			t.Errorf("the dashboard never queries %s", name)
		}
	}
	// The labels of who is limited hold values from the configuration.
	if f := fams["floodgate_decisions_total"]; f != nil {
		for label, want := range map[string]string{"scope": "default", "rule": "none"} {
			if !slices.Contains(f.Labels[label], want) {
				t.Errorf("floodgate_decisions_total{%s}: values %q, want %q among them", label, f.Labels[label], want)
			}
		}
		if !slices.Contains(f.Labels["rule"], "login") || !slices.Contains(f.Labels["scope"], "login") {
			t.Errorf("floodgate_decisions_total: no series of the policy's rule login (scope %q, rule %q)", f.Labels["scope"], f.Labels["rule"])
		}
	}
}

// checkQuery checks one parsed query against fams and records the families
// it uses in used.
func checkQuery(t *testing.T, q query, expr parser.Expr, fams map[string]*family, used map[string]bool) {
	t.Helper()
	where := q.Where + ": " + q.Expr
	// The families each selector resolves to, by selector.
	resolved := make(map[*parser.VectorSelector]*family)
	buckets := make(map[*parser.VectorSelector]bool)
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			t.Errorf("%s: selector %s names no metric", where, vs)
			return nil
		}
		base, f, isBucket, ok := series(fams, name)
		if !ok {
			t.Errorf("%s: no series %s in floodgate's /metrics", where, name)
			return nil
		}
		used[base] = true
		resolved[vs] = f
		buckets[vs] = isBucket
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				continue
			}
			checkMatcher(t, where, name, f, isBucket, m)
		}
		return nil
	})

	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "increase", "irate":
				parser.Inspect(n.Args[0], func(inner parser.Node, _ []parser.Node) error {
					if vs, ok := inner.(*parser.VectorSelector); ok {
						if f := resolved[vs]; f != nil && f.Type != dto.MetricType_COUNTER && f.Type != dto.MetricType_HISTOGRAM && f.Type != dto.MetricType_SUMMARY {
							t.Errorf("%s: %s of %s, a %v", where, n.Func.Name, vs.Name, f.Type)
						}
					}
					return nil
				})
			case "histogram_quantile":
				leKept := false
				parser.Inspect(n.Args[1], func(inner parser.Node, _ []parser.Node) error {
					switch v := inner.(type) {
					case *parser.VectorSelector:
						if resolved[v] != nil && !buckets[v] {
							t.Errorf("%s: histogram_quantile of %s, not a _bucket series", where, v.Name)
						}
					case *parser.AggregateExpr:
						if !v.Without && slices.Contains(v.Grouping, "le") {
							leKept = true
						}
					}
					return nil
				})
				if !leKept {
					t.Errorf("%s: histogram_quantile over an aggregation that drops le", where)
				}
			}
		case *parser.AggregateExpr:
			// Each grouping label must exist on some series aggregated.
			for _, l := range n.Grouping {
				found := slices.Contains(targetLabels, l)
				parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
					if vs, ok := inner.(*parser.VectorSelector); ok && resolved[vs] != nil {
						_, has := resolved[vs].Labels[l]
						found = found || has || (l == "le" && buckets[vs])
					}
					return nil
				})
				if !found {
					t.Errorf("%s: %s by %s, a label none of its series has", where, n.Op, l)
				}
			}
		}
		return nil
	})
}

// checkMatcher checks one label matcher of a selector of series name.
func checkMatcher(t *testing.T, where, name string, f *family, isBucket bool, m *labels.Matcher) {
	t.Helper()
	if slices.Contains(targetLabels, m.Name) {
		return // Prometheus's, not floodgate's: any value may come
	}
	if m.Name == "le" && isBucket {
		return
	}
	values, ok := f.Labels[m.Name]
	if !ok {
		t.Errorf("%s: %s has no label %s", where, name, m.Name)
		return
	}
	switch m.Type {
	case labels.MatchEqual:
		if !slices.Contains(values, m.Value) {
			t.Errorf("%s: %s{%s}: floodgate exports the values %q", where, name, m, values)
		}
	case labels.MatchRegexp:
		if !slices.ContainsFunc(values, m.Matches) {
			t.Errorf("%s: %s{%s} matches none of the values %q", where, name, m, values)
		}
	case labels.MatchNotEqual, labels.MatchNotRegexp:
		if !slices.ContainsFunc(values, m.Matches) {
			t.Errorf("%s: %s{%s} leaves none of the values %q", where, name, m, values)
		}
	}
}
