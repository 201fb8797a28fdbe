package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/console/topk"
	"github.com/floodgate-rl/floodgate/policy"
)

// Bounds of the API's parameters.
const (
	// DefaultTop is the requestors a top list has when n is not given.
	DefaultTop = 20
	// MaxTop is the most it may have.
	MaxTop = 100
	// MaxIdentityLen is the longest identity a lookup takes.
	MaxIdentityLen = 4096
	// maxDomainLen bounds the domain of an "rls:" scope.
	maxDomainLen = 256
	// requestTimeout bounds one console request's store reads.
	requestTimeout = 2 * time.Second
)

// Config configures a Server. Top is required; every other zero value is
// usable.
type Config struct {
	// Top gives the summaries of denials.
	Top TopSource
	// Peek reads a requestor's usage; nil answers lookups with 501.
	Peek Peeker
	// Resolve turns a lookup's scope and identity into a Target; nil
	// answers lookups with 501.
	Resolve Resolver
	// Display shows a requestor identity to the operator (a fingerprint of
	// an API key, say); nil shows it as it is.
	Display func(identity string) string
	// Status describes the replica for the page and /api/v1/status; nil
	// shows nothing of it.
	Status func() Status
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the server's own failures; nil discards them.
	Logger *slog.Logger
}

// Server serves the console: the JSON API and the live page (see the
// package doc). Create one with New; it is safe for concurrent use.
type Server struct {
	src     TopSource
	peek    Peeker
	resolve Resolver
	display func(string) string
	status  func() Status
	now     func() time.Time
	log     *slog.Logger
}

// New returns the console of cfg. It returns an error when cfg.Top is nil.
func New(cfg Config) (*Server, error) {
	if cfg.Top == nil {
		return nil, errors.New("new console: nil top source")
	}
	s := &Server{src: cfg.Top, peek: cfg.Peek, resolve: cfg.Resolve, display: cfg.Display, status: cfg.Status, now: cfg.Now, log: cfg.Logger}
	if cfg.Resolve == nil {
		s.peek = nil
	}
	if s.display == nil {
		s.display = func(id string) string { return id }
	}
	if s.status == nil {
		s.status = func() Status { return Status{} }
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Handler returns the console's routes: GET / (the page, with its
// /console.css and /console.js), /api/v1/top, /api/v1/requestors,
// /api/v1/scopes and /api/v1/status.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.HandleFunc("GET /api/v1/top", s.serveTop)
	mux.HandleFunc("GET /api/v1/requestors", s.serveLookup)
	mux.HandleFunc("GET /api/v1/scopes", s.serveScopes)
	mux.HandleFunc("GET /api/v1/status", s.serveStatus)
	mux.HandleFunc("GET /console.css", serveAsset("console.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /console.js", serveAsset("console.js", "text/javascript; charset=utf-8"))
	return mux
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

// writeJSON answers v with code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// badRequest answers 400 with msg.
func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, apiError{Error: msg})
}

func (s *Server) serveTop(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	scope, err := scopeParam(q)
	if err == nil {
		var win topk.Window
		var n int
		if win, err = windowParam(q); err == nil {
			n, err = nParam(q)
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
			defer cancel()
			writeJSON(w, http.StatusOK, s.top(ctx, scope, win, n, s.now()))
			return
		}
	}
	badRequest(w, err.Error())
}

func (s *Server) serveLookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := lookupParams(q)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	l, err := s.lookup(ctx, p.scope, p.identity, p.limit, p.window, s.now())
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, l)
	case errors.Is(err, ErrBadLookup):
		badRequest(w, err.Error())
	case s.peek == nil || errors.Is(err, ErrNoLookup):
		writeJSON(w, http.StatusNotImplemented, apiError{Error: err.Error()})
	default:
		s.log.Warn("console lookup failed", "scope", p.scope, "error", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	}
}

func (s *Server) serveScopes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	scopes, cov := s.src.Scopes(ctx, s.now())
	writeJSON(w, http.StatusOK, map[string]any{"scopes": nonNil(scopes), "replicas": cov.Replicas, "cluster_error": cov.Err})
}

func (s *Server) serveStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// lookupQuery is the parameters of a lookup.
type lookupQuery struct {
	scope, identity string
	limit           int64
	window          time.Duration
}

// lookupParams reads scope, identity and the optional limit and
// limit_window of a lookup.
func lookupParams(q url.Values) (lookupQuery, error) {
	scope, err := scopeParam(q)
	if err != nil {
		return lookupQuery{}, err
	}
	p := lookupQuery{scope: scope, identity: q.Get("identity")}
	switch {
	case p.identity == "":
		return p, errors.New("identity: required, e.g. identity=203.0.113.7 or identity=header:x-api-key:KEY")
	case len(p.identity) > MaxIdentityLen:
		return p, fmt.Errorf("identity: %d bytes, at most %d", len(p.identity), MaxIdentityLen)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > policy.MaxLimit {
			return p, fmt.Errorf("limit %.20q: want a number from 1 to %d", v, policy.MaxLimit)
		}
		p.limit = n
	}
	if v := q.Get("limit_window"); v != "" {
		d, err := policy.ParseWindow(v)
		if err != nil {
			return p, fmt.Errorf("limit_window %.20q: %w", v, err)
		}
		p.window = d
	}
	return p, nil
}

// scopeParam reads scope: absent or "" for the default scope, a scope as
// policy.CheckScope accepts it, or "rls:" and a domain.
func scopeParam(q url.Values) (string, error) {
	s := q.Get("scope")
	if s == "" {
		return "", nil
	}
	if d, ok := strings.CutPrefix(s, "rls:"); ok {
		if d == "" || len(d) > maxDomainLen || strings.ContainsFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return "", fmt.Errorf("scope %.80q: want rls: and a domain of 1 to %d printable characters", s, maxDomainLen)
		}
		return s, nil
	}
	if err := policy.CheckScope(s); err != nil {
		return "", fmt.Errorf("scope %.80q: %w", s, err)
	}
	return s, nil
}

// windowParam reads window: "5m" (the default) or "1h".
func windowParam(q url.Values) (topk.Window, error) {
	v := q.Get("window")
	if v == "" {
		return topk.FiveMinutes, nil
	}
	w, ok := topk.ParseWindow(v)
	if !ok {
		return 0, fmt.Errorf("window %.20q: want 5m or 1h", v)
	}
	return w, nil
}

// nParam reads n: 1 to MaxTop, DefaultTop when absent.
func nParam(q url.Values) (int, error) {
	v := q.Get("n")
	if v == "" {
		return DefaultTop, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxTop {
		return 0, fmt.Errorf("n %.20q: want a number from 1 to %d", v, MaxTop)
	}
	return n, nil
}
