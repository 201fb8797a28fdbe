package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/floodgate-rl/floodgate/console/topk"
)

// assets are the page's template, style sheet and script: served by the
// binary, no build step, nothing fetched from elsewhere.
//
//go:embed assets/page.html assets/console.css assets/console.js
var assets embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"rate":    func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"percent": func(v float64) string { return strconv.FormatFloat(100*v, 'f', 1, 64) + "%" },
	"scopeName": func(s string) string {
		if s == "" {
			return "default"
		}
		return s
	},
	"inc": func(i int) int { return i + 1 },
	"dict": func(kv ...any) map[string]any {
		m := make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
	"lookupURL": func(scope, identity string) string {
		return "/?" + url.Values{"scope": {scope}, "identity": {identity}}.Encode() + "#lookup"
	},
}).ParseFS(assets, "assets/page.html"))

// pageTop is the number of requestors per scope the page lists.
const pageTop = 10

// page is what the template renders.
type page struct {
	Now       string
	Status    Status
	Window    string
	Other     string // the other window, for the toggle
	Scopes    []Top
	Scope     string
	Identity  string
	Lookup    *lookupView
	LookupErr string
}

// lookupView is a Lookup with its usage bar and per-minute chart drawn.
type lookupView struct {
	Lookup
	UsedWidth int // of barWidth
	BarWidth  int
	Bars      []chartBar
	ChartW    int
	ChartH    int
	MaxMinute int64
}

// chartBar is one minute of the chart.
type chartBar struct {
	X, Y, W, H int
	Title      string
}

// Geometry of the usage bar and the chart, in SVG user units.
const (
	barWidth = 300
	chartH   = 60
	chartW   = 360
)

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	win, err := windowParam(q)
	if err != nil {
		win = topk.FiveMinutes
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	now := s.now()
	p := page{Now: stamp(now), Status: s.status(), Window: win.String(), Other: "1h"}
	if win == topk.Hour {
		p.Other = "5m"
	}
	scopes, _ := s.src.Scopes(ctx, now)
	for _, sc := range scopes {
		p.Scopes = append(p.Scopes, s.top(ctx, sc, win, pageTop, now))
	}
	if q.Has("identity") {
		p.Scope, p.Identity = q.Get("scope"), q.Get("identity")
		p.Lookup, p.LookupErr = s.pageLookup(ctx, q, now)
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		s.log.Error("console page failed to render", "error", err)
		http.Error(w, "console page failed to render", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	setSecurityHeaders(h)
	w.Write(buf.Bytes())
}

// setSecurityHeaders forbids the page anything but its own script and
// style sheet: no inline script, no frames, no other origin.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// pageLookup runs the lookup of the page's form.
func (s *Server) pageLookup(ctx context.Context, q url.Values, now time.Time) (*lookupView, string) {
	p, err := lookupParams(q)
	if err != nil {
		return nil, err.Error()
	}
	l, err := s.lookup(ctx, p.scope, p.identity, p.limit, p.window, now)
	if err != nil {
		return nil, err.Error()
	}
	return drawLookup(l), ""
}

// drawLookup sizes the usage bar and the chart of l.
func drawLookup(l Lookup) *lookupView {
	v := &lookupView{Lookup: l, BarWidth: barWidth, ChartW: chartW, ChartH: chartH}
	if l.Limit > 0 {
		v.UsedWidth = int(min(l.Count, l.Limit) * barWidth / l.Limit)
	}
	for _, m := range l.Minutes {
		v.MaxMinute = max(v.MaxMinute, m.Count)
	}
	n := len(l.Minutes)
	if n == 0 {
		return v
	}
	step := chartW / n
	for i, m := range l.Minutes {
		h := 0
		if v.MaxMinute > 0 {
			h = int(m.Count * (chartH - 2) / v.MaxMinute)
		}
		if m.Count > 0 {
			h = max(h, 1)
		}
		v.Bars = append(v.Bars, chartBar{X: i * step, Y: chartH - h, W: max(step-1, 1), H: h, Title: fmt.Sprintf("%s: %d", m.Start, m.Count)})
	}
	return v
}

// serveAsset serves the embedded style sheet or script.
func serveAsset(name, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			http.Error(w, errors.New("asset missing").Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-cache")
		setSecurityHeaders(w.Header())
		w.Write(b)
	}
}
