package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// ConfigMap is a directory laid out as the kubelet lays out a ConfigMap
// volume of one file: Dir/<name> -> ..data/<name>, ..data -> ..<version>.
// Update writes a new version directory and renames a new ..data symlink
// over the old one, atomically, as the kubelet does on a change.
type ConfigMap struct {
	// Dir is the volume's directory: what floodgate is given for a
	// directory of files (--rls-config).
	Dir     string
	tb      testing.TB
	name    string
	version int
}

// NewConfigMap returns a ConfigMap in a new temporary directory whose one
// file, name, holds content.
func NewConfigMap(tb testing.TB, name, content string) *ConfigMap {
	tb.Helper()
	c := &ConfigMap{Dir: tb.TempDir(), tb: tb, name: name}
	c.Update(content)
	if err := os.Symlink(filepath.Join("..data", name), c.Path()); err != nil {
		tb.Fatal(err)
	}
	return c
}

// Path is the file's path in the volume: what floodgate is given for one
// file (--policy).
func (c *ConfigMap) Path() string { return filepath.Join(c.Dir, c.name) }

// Update publishes content atomically.
func (c *ConfigMap) Update(content string) {
	c.tb.Helper()
	c.version++
	version := fmt.Sprintf("..2026_11_22_00_00_%02d.%d", c.version, c.version)
	if err := os.Mkdir(filepath.Join(c.Dir, version), 0o755); err != nil {
		c.tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, version, c.name), []byte(content), 0o644); err != nil {
		c.tb.Fatal(err)
	}
	tmp := filepath.Join(c.Dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		c.tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.Dir, "..data")); err != nil {
		c.tb.Fatal(err)
	}
}
