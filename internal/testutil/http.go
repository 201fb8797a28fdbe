package testutil

import (
	"io"
	"net/http"
	"testing"
)

// Get returns the status code and body of a GET of url. A request or a
// read of the body that fails fails the test.
func Get(tb testing.TB, url string) (code int, body string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
