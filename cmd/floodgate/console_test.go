package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/console"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// consoleAddr returns the address of the console a server logged.
func consoleAddr(t *testing.T, s *server) string {
	t.Helper()
	var addr string
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"console_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "console serving" {
				addr = l.Addr
				return nil
			}
		}
		return errNotYet("no \"console serving\" line")
	})
	return addr
}

type errNotYet string

func (e errNotYet) Error() string { return string(e) }

// getJSON fetches url into v and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && json.Unmarshal(b, v) != nil {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// TestServeConsole drives floodgate in process, and the inspect command as
// the binary: denials reach the top list (addresses shown, an API key as
// its fingerprint), the lookup reads the count without counting, inspect
// prints it with its exit status, and the console's routes are not on the
// admin listener.
func TestServeConsole(t *testing.T) {
	s := startInProcess(t, "--limit", "2", "--window", "1h", "--console-addr", "127.0.0.1:0")
	addr := consoleAddr(t, s)
	client := authv3.NewAuthorizationClient(s.dial(t))
	ctx := context.Background()
	for range 5 {
		if _, err := client.Check(ctx, checkRequest("203.0.113.7")); err != nil {
			t.Fatal(err)
		}
	}
	var top console.Top
	testutil.WaitFor(t, 10*time.Second, func() error {
		getJSON(t, "http://"+addr+"/api/v1/top?scope=&n=5", &top)
		if top.TotalDenials != 3 {
			return errNotYet("top total " + string(rune('0'+top.TotalDenials)))
		}
		return nil
	})
	if len(top.Requestors) != 1 || top.Requestors[0].Identity != "ip:203.0.113.7" || top.Requestors[0].Denials != 3 || top.Requestors[0].Share != 1 {
		t.Errorf("top = %+v", top)
	}
	if n := top.Requestors[0].RetryAfter; n < 3500 || n > 3600 {
		t.Errorf("top's current N = %d, want about 3600", n)
	}
	for range 3 { // looking never counts: three lookups change nothing
		var l console.Lookup
		if code := getJSON(t, "http://"+addr+"/api/v1/requestors?identity=203.0.113.7", &l); code != 200 {
			t.Fatalf("lookup: %d %+v", code, l)
		}
		// Read from the store: the 2 allowed, none of the denied.
		var perMinute int64
		for _, m := range l.Minutes {
			perMinute += m.Count
		}
		if l.Identity != "ip:203.0.113.7" || l.Count != 2 || l.Remaining != 0 || l.Limit != 2 || l.WindowSeconds != 3600 || l.RetryAfter < 3500 || l.RetryAfter > 3600 || l.Partial != "" || perMinute != 2 || len(l.Minutes) < 60 {
			t.Errorf("lookup = %+v", l)
		}
	}
	var other console.Lookup
	getJSON(t, "http://"+addr+"/api/v1/requestors?identity=ip:198.51.100.9", &other)
	if other.Count != 0 || other.Remaining != 2 || other.RetryAfter != 0 {
		t.Errorf("unseen requestor = %+v", other)
	}
	code, out, errOut := runBin(t, nil, "inspect", "--console", addr, "203.0.113.7")
	if code != exitLimited || !strings.Contains(out, "requestor  ip:203.0.113.7\n") || !strings.Contains(out, " in the window, 0 remaining\n") {
		t.Errorf("inspect: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := runBin(t, nil, "inspect", "--console", addr, "198.51.100.9"); code != exitOK || !strings.Contains(out, "N          0: allowed now") {
		t.Errorf("inspect of an allowed requestor: exit %d\n%s", code, out)
	}
	if code, _, errOut := runBin(t, nil, "inspect", "--console", addr, "--scope", "bad scope", "x"); code != exitUsage || !strings.Contains(errOut, "400 Bad Request: scope") {
		t.Errorf("inspect with a bad scope: exit %d %s", code, errOut)
	}
	if code, _, _ := runBin(t, nil, "inspect", "--console", "127.0.0.1:1", "x"); code != exitFailed {
		t.Errorf("inspect of no console: exit %d, want %d", code, exitFailed)
	}
	if code, _ := s.get(t, "/api/v1/top"); code != http.StatusNotFound {
		t.Errorf("admin listener serves /api/v1/top: %d", code)
	}
	// The client was denied 3 times, and the lookups counted nothing: its
	// next Check is still denied, and it got no more requests in.
	resp, err := client.Check(ctx, checkRequest("203.0.113.7"))
	if err != nil || resp.GetStatus().GetCode() == 0 {
		t.Errorf("after the lookups: %v %v", resp.GetStatus(), err)
	}
}

// TestServeConsoleFingerprints: with --key header:x-api-key the console
// shows the key as its fingerprint, and looks it up by the key itself.
func TestServeConsoleFingerprints(t *testing.T) {
	s := startInProcess(t, "--limit", "1", "--key", "header:x-api-key", "--console-addr", "127.0.0.1:0")
	addr := consoleAddr(t, s)
	client := authv3.NewAuthorizationClient(s.dial(t))
	req := checkRequest("203.0.113.7")
	req.Attributes.Request.Http.Headers["x-api-key"] = "k-secret-123"
	for range 2 {
		if _, err := client.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	want := authz.DisplayIdentity("header:x-api-key:k-secret-123", false)
	var top console.Top
	testutil.WaitFor(t, 10*time.Second, func() error {
		getJSON(t, "http://"+addr+"/api/v1/top", &top)
		if len(top.Requestors) == 0 {
			return errNotYet("no requestor listed")
		}
		return nil
	})
	if top.Requestors[0].Identity != want || strings.Contains(top.Requestors[0].Identity, "secret") {
		t.Errorf("listed as %q, want %q", top.Requestors[0].Identity, want)
	}
	var l console.Lookup
	getJSON(t, "http://"+addr+"/api/v1/requestors?identity=k-secret-123", &l)
	if l.Identity != want || l.Count < 1 || l.Remaining != 0 {
		t.Errorf("lookup by the bare key = %+v", l)
	}
	var e struct{ Error string }
	if code := getJSON(t, "http://"+addr+"/api/v1/requestors?identity="+want, &e); code != 400 || !strings.Contains(e.Error, "a fingerprint cannot be looked up") {
		t.Errorf("lookup by the fingerprint: %d %s", code, e.Error)
	}
}

// TestServeConsoleOff: --console-addr off serves none, and a console port
// in use does not stop floodgate from serving.
func TestServeConsoleOff(t *testing.T) {
	s := startInProcess(t, "--console-addr", "off")
	if strings.Contains(s.stderr.String(), "console serving") {
		t.Error("console served with --console-addr off")
	}
	busy := startInProcess(t, "--console-addr", "127.0.0.1:0")
	taken := consoleAddr(t, busy)
	s2 := startInProcess(t, "--console-addr", taken)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(s2.stderr.String(), "console not served, floodgate goes on without it") {
			return errNotYet("no line about the console's port")
		}
		return nil
	})
	if code, _ := s2.get(t, "/readyz"); code != 200 {
		t.Errorf("floodgate without its console: /readyz %d", code)
	}
}

func TestConsoleFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{nil, nil, "127.0.0.1:9091", ""},
		{[]string{"--console-addr", "off"}, nil, "", ""},
		{[]string{"--console-addr", ""}, nil, "", ""},
		{nil, map[string]string{"FLOODGATE_CONSOLE_ADDR": "off"}, "", ""},
		{nil, map[string]string{"FLOODGATE_CONSOLE_ADDR": "0.0.0.0:9999"}, "0.0.0.0:9999", ""},
		{[]string{"--console-addr", "9091"}, nil, "", `invalid value "9091" for flag --console-addr: want host:port, e.g. 127.0.0.1:9091, or "off"`},
	} {
		cfg, err := ParseConfig(tc.args, func(k string) string { return tc.env[k] })
		switch {
		case tc.err != "":
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v %v: error %v, want %s", tc.args, tc.env, err, tc.err)
			}
		case err != nil || cfg.ConsoleAddr != tc.want:
			t.Errorf("%v %v: %q %v, want %q", tc.args, tc.env, cfg.ConsoleAddr, err, tc.want)
		}
	}
}
