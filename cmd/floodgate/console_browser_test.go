package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/console"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// chromiumPath finds Debian's chromium (scripts/deps.sh installs it); a
// test without it skips, and fails under CI.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatal("chromium not found under CI: scripts/deps.sh installs it (apt-get install chromium)")
	}
	t.Skip("chromium not found: run make deps (apt-get install chromium) for the console's browser test")
	return ""
}

// browser starts a headless Chromium and returns a context driving it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1400), chromedp.Flag("user-data-dir", t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(bctx, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

// shownTop is a top list as the page shows it.
type shownTop struct {
	Total int64            `json:"total"`
	Rows  map[string]int64 `json:"rows"`
}

// readShownTop reads the default scope's top list from the page.
const readShownTop = `(() => {
	const t = document.querySelector('table.toplist[data-scope=""]');
	if (!t) return {total: -1, rows: {}};
	const rows = {};
	for (const tr of t.querySelectorAll('tbody tr')) rows[tr.dataset.identity] = Number(tr.querySelector('td.denials').textContent);
	return {total: Number(t.dataset.total), rows};
})()`

// TestBrowserConsole loads the console in a real headless Chromium while
// clients are being denied, checks that the page refreshes itself, that
// the numbers it shows once the traffic stops are the API's, and that its
// lookup box shows a requestor's count, remaining and N; it leaves a
// screenshot in the test's temp dir.
func TestBrowserConsole(t *testing.T) {
	ctx := browser(t)
	s := startServer(t, "--limit", "3", "--window", "1h", "--console-addr", "127.0.0.1:0")
	addr := consoleAddr(t, s)
	client := authv3.NewAuthorizationClient(s.dial(t))

	// Traffic: five clients, each sending 40 checks, 37 of them denied.
	var wg sync.WaitGroup
	var mu sync.Mutex
	denied := make(map[string]int64)
	for c := 1; c <= 5; c++ {
		ip := "198.51.100." + strconv.Itoa(c)
		wg.Go(func() {
			for i := range 40 {
				resp, err := client.Check(context.Background(), checkRequest(ip))
				if err != nil {
					t.Errorf("check: %v", err)
					return
				}
				if resp.GetStatus().GetCode() != 0 {
					mu.Lock()
					denied["ip:"+ip]++
					mu.Unlock()
				}
				if i%10 == 0 {
					time.Sleep(50 * time.Millisecond) // spread the traffic over the page's first refreshes
				}
			}
		})
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(chromedp.ID("live")),
	); err != nil {
		t.Fatalf("load the console: %v", err)
	}
	// The page refreshes itself while the traffic runs.
	testutil.WaitFor(t, 30*time.Second, func() error {
		refreshes, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.refreshes || "0"`))
		if err != nil {
			return err
		}
		if refreshes == "0" {
			return errNotYet("the page has not refreshed itself")
		}
		return nil
	})
	wg.Wait()

	// Once the denials are all recorded, the page shows the API's numbers.
	var want console.Top
	testutil.WaitFor(t, 30*time.Second, func() error {
		getJSON(t, "http://"+addr+"/api/v1/top?scope=&n=10", &want)
		if want.TotalDenials != 5*37 {
			return fmt.Errorf("API total %d, want %d", want.TotalDenials, 5*37)
		}
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[shownTop](readShownTop))
		if err != nil {
			return err
		}
		if shown.Total != int64(want.TotalDenials) || len(shown.Rows) != len(want.Requestors) {
			return fmt.Errorf("page shows %+v, API %d over %d requestors", shown, want.TotalDenials, len(want.Requestors))
		}
		for _, r := range want.Requestors {
			if shown.Rows[r.Identity] != int64(r.Denials) || int64(r.Denials) != denied[r.Identity] {
				return fmt.Errorf("%s: page %d, API %d, clients saw %d", r.Identity, shown.Rows[r.Identity], r.Denials, denied[r.Identity])
			}
		}
		return nil
	})

	// The lookup box, through the page's script.
	var lk console.Lookup
	getJSON(t, "http://"+addr+"/api/v1/requestors?identity=198.51.100.2", &lk)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`input[name=identity]`), "198.51.100.2"),
		chromedp.Click(chromedp.CSS(`#lookup-form button`)),
		chromedp.WaitVisible(chromedp.ID("lk-count")),
	); err != nil {
		t.Fatalf("lookup box: %v", err)
	}
	text := func(id string) string {
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return v
	}
	count, remaining, retry := text("lk-count"), text("lk-remaining"), text("lk-retry")
	if count != strconv.FormatInt(lk.Count, 10) || remaining != "0" || lk.Remaining != 0 {
		t.Errorf("lookup box shows count %s remaining %s, API %+v", count, remaining, lk)
	}
	if n, _ := strconv.ParseInt(retry, 10, 64); n < 3500 || n > lk.RetryAfter+1 {
		t.Errorf("lookup box shows N %s, API %d", retry, lk.RetryAfter)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "console.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("FLOODGATE_SCREENSHOT_DIR"); dir != "" {
		os.WriteFile(filepath.Join(dir, "console.png"), shot, 0o644)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
}
