package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/authz"
)

// moduleRoot is the repository root, from this package's directory.
var moduleRoot = filepath.Join("..", "..")

// metricName finds the metric names the code registers: every string
// literal "floodgate_..." of a non-test Go file.
var metricName = regexp.MustCompile(`"(floodgate_[a-z0-9_]+)"`)

// tableMetric finds the metrics a table row names: `floodgate_x` or
// `floodgate_x{labels}`.
var tableMetric = regexp.MustCompile("`(floodgate_[a-z0-9_]+)(?:\\{[a-z_,]*\\})?`")

// TestDocsListEveryMetric checks that the metric tables of README.md and
// docs/operations.md list every metric the code registers.
func TestDocsListEveryMetric(t *testing.T) {
	t.Parallel()
	code := registeredMetrics(t)
	if len(code) < 30 {
		t.Fatalf("found %d metric names in the code (%v): the scan is broken", len(code), code)
	}
	for _, doc := range []string{"README.md", filepath.Join("docs", "operations.md")} {
		listed := make(map[string]bool)
		for line := range strings.Lines(readDoc(t, doc)) {
			if !strings.HasPrefix(line, "| `floodgate_") {
				continue
			}
			cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
			for _, m := range tableMetric.FindAllStringSubmatch(cell, -1) {
				listed[m[1]] = true
			}
		}
		for _, name := range code {
			if !listed[name] {
				t.Errorf("%s: the metric table lacks %s", doc, name)
			}
		}
	}
}

// TestREADMEListsEveryExtension checks that the README's table of
// per-route context extensions has a row for each extension authz reads.
func TestREADMEListsEveryExtension(t *testing.T) {
	t.Parallel()
	readme := readDoc(t, "README.md")
	for _, name := range []string{authz.ExtLimit, authz.ExtWindow, authz.ExtKey, authz.ExtScope, authz.ExtStrategy} {
		if !strings.Contains(readme, "\n| `"+name+"` | ") {
			t.Errorf("README.md: the extension table lacks %s", name)
		}
	}
}

// registeredMetrics returns the sorted metric names of the module's
// non-test Go files.
func registeredMetrics(t *testing.T) []string {
	t.Helper()
	seen := make(map[string]bool)
	err := filepath.WalkDir(moduleRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != moduleRoot && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricName.FindAllSubmatch(src, -1) {
			seen[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
