package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/console"
)

// exitLimited is inspect's status for a requestor that is limited now.
const exitLimited = 3

// inspectUsage is the help of the inspect subcommand.
const inspectUsage = `Usage: floodgate inspect [--console ADDR] [--scope S] [--limit N --limit-window W] IDENTITY

Prints what a running floodgate counts for one requestor, read from the
store that decides without counting anything: the limit and window in
force, the requests in the window, what remains, N (the seconds until its
next request is allowed, as a 429 says) and its requests per minute.
It asks the console (GET /api/v1/requestors) of the floodgate at ADDR
(default 127.0.0.1:9091, as --console-addr).

IDENTITY is an address (203.0.113.7), floodgate's form (ip:203.0.113.7,
header:x-api-key:KEY), or an API key when the scope keys on a header.
--limit and --limit-window give the limit of a route whose floodgate.limit
the server cannot know.

Exit status: 0 when the requestor may make a request now; 3 when it is
limited (N > 0); 2 for bad arguments or a lookup the console refuses (the
reason on stderr); 1 when the console cannot be reached or fails.
`

// inspect runs floodgate inspect; args are those after the subcommand.
func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("console", "127.0.0.1:9091", "")
	scope := fs.String("scope", "", "")
	limit := fs.String("limit", "", "")
	window := fs.String("limit-window", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(stdout, inspectUsage)
			return exitOK
		}
		fmt.Fprintf(stderr, "floodgate: inspect: %v\n", flagError(err))
		return exitUsage
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fmt.Fprintf(stderr, "floodgate: inspect takes one identity: floodgate inspect --console ADDR --scope S IDENTITY\n")
		return exitUsage
	}
	q := url.Values{"scope": {*scope}, "identity": {fs.Arg(0)}}
	if *limit != "" {
		q.Set("limit", *limit)
	}
	if *window != "" {
		q.Set("limit_window", *window)
	}
	l, code, err := fetchLookup(ctx, *addr, q)
	if err != nil {
		fmt.Fprintf(stderr, "floodgate: inspect: %v\n", err)
		return code
	}
	printLookup(stdout, l)
	if l.RetryAfter > 0 {
		return exitLimited
	}
	return exitOK
}

// fetchLookup asks the console at addr, returning the exit status to use
// when it fails.
func fetchLookup(ctx context.Context, addr string, q url.Values) (console.Lookup, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := "http://" + addr + "/api/v1/requestors?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return console.Lookup{}, exitUsage, fmt.Errorf("--console %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return console.Lookup{}, exitFailed, fmt.Errorf("console at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return console.Lookup{}, exitFailed, fmt.Errorf("console at %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.Unmarshal(body, &e)
		code := exitFailed
		if resp.StatusCode == http.StatusBadRequest {
			code = exitUsage
		}
		return console.Lookup{}, code, fmt.Errorf("console at %s: %s: %s", addr, resp.Status, cmp.Or(e.Error, strings.TrimSpace(string(body))))
	}
	var l console.Lookup
	if err := json.Unmarshal(body, &l); err != nil {
		return console.Lookup{}, exitFailed, fmt.Errorf("console at %s: decode the answer: %w", addr, err)
	}
	return l, exitOK, nil
}

// printLookup writes l for a terminal.
func printLookup(w io.Writer, l console.Lookup) {
	scope := l.Scope
	if scope == "" {
		scope = "default"
	}
	fmt.Fprintf(w, "requestor  %s\n", l.Identity)
	fmt.Fprintf(w, "scope      %s\n", scope)
	fmt.Fprintf(w, "limit      %d per %ds (%s; %s)\n", l.Limit, l.WindowSeconds, l.Strategy, l.Source)
	fmt.Fprintf(w, "count      %d in the window, %d remaining\n", l.Count, l.Remaining)
	if l.RetryAfter > 0 {
		fmt.Fprintf(w, "N          %d s until the next request is allowed\n", l.RetryAfter)
	} else {
		fmt.Fprintf(w, "N          0: allowed now\n")
	}
	if len(l.Minutes) > 0 {
		fmt.Fprintf(w, "per minute %s (oldest first)\n", sparkline(l.Minutes))
	}
	if l.Partial != "" {
		fmt.Fprintf(w, "note       %s\n", l.Partial)
	}
	fmt.Fprintf(w, "at         %s\n", l.At)
}

// sparkline draws counts per minute with block characters, scaled to the
// largest, and names the largest.
func sparkline(ms []console.Minute) string {
	const blocks = "▁▂▃▄▅▆▇█"
	runes := []rune(blocks)
	var peak int64
	for _, m := range ms {
		peak = max(peak, m.Count)
	}
	var b strings.Builder
	for _, m := range ms {
		switch {
		case m.Count == 0:
			b.WriteByte(' ')
		case peak > 0:
			b.WriteRune(runes[int((m.Count*int64(len(runes)-1))/peak)])
		}
	}
	return fmt.Sprintf("%s max %d", b.String(), peak)
}
