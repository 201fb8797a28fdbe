package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

// DefaultPollInterval is how often floodgate looks at its policy file.
const DefaultPollInterval = time.Second

// Watcher reloads a policy file when its content changes. It polls: every
// poll reads the file (through any symbolic links, so the atomic symlink
// swap of a Kubernetes ConfigMap volume is seen like any other change) and
// compares the SHA-256 of its content with the last one seen. Polling needs
// no inotify and works on every file system; a file is at most MaxFileSize
// bytes, so a poll costs one small read.
//
// A Watcher reports each distinct state once: a new valid content to
// OnLoad, a new invalid content, or a new read error, to OnError. The
// callbacks run on the goroutine that calls Poll or Run, one at a time.
// Create one with [NewWatcher]; [Watcher.Poll] and [Watcher.Run] must not be
// called concurrently.
type Watcher struct {
	path    string
	onLoad  func(*Policy)
	onError func(error)
	last    string // digest of the last content seen, or "error:" + the last read error
}

// NewWatcher returns a Watcher of the file at path whose content is now
// current (nil when the file has not been loaded yet). onLoad receives each
// new valid policy and onError each failure to read or parse a changed
// file; either may be nil.
func NewWatcher(path string, current *Policy, onLoad func(*Policy), onError func(error)) *Watcher {
	w := &Watcher{path: path, onLoad: onLoad, onError: onError}
	if current != nil {
		w.last = current.Digest
	}
	if w.onLoad == nil {
		w.onLoad = func(*Policy) {}
	}
	if w.onError == nil {
		w.onError = func(error) {}
	}
	return w
}

// Poll reads the file once and reports a change, if any. It returns true
// when it called OnLoad or OnError.
func (w *Watcher) Poll() bool {
	data, err := ReadFile(w.path)
	if err != nil {
		state := "error:" + err.Error()
		if state == w.last {
			return false
		}
		w.last = state
		w.onError(err)
		return true
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	if digest == w.last {
		return false
	}
	w.last = digest
	p, err := Parse(data)
	if err != nil {
		w.onError(err)
		return true
	}
	w.onLoad(p)
	return true
}

// Run polls every interval ([DefaultPollInterval] when not positive) until
// ctx is done.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	periodic.Run(ctx, interval, func() { w.Poll() })
}
