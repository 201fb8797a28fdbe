package rls

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/floodgate-rl/floodgate/policy"
)

// file is one configuration file's name and content.
type file struct {
	name string
	data []byte
}

// Load reads the configuration at path: one YAML file, or a directory whose
// regular files (or symbolic links to them) named *.yaml or *.yml, not
// starting with ".", are each one domain's file, read in name order; other
// entries and subdirectories are ignored, so the ..data directory and the
// symbolic links of a Kubernetes ConfigMap volume read as their files. Each
// file is at most policy.MaxFileSize bytes. A directory without such files
// is an error. Every problem in every file is reported: the error is always
// Errors.
func Load(path string) (*Config, error) {
	files, errs := readFiles(path)
	if len(errs) > 0 {
		return nil, errs
	}
	return build(files)
}

// Check loads the configuration at path as Load does, and returns nil when
// it is valid, else Errors listing every problem: what
// `floodgate check-rls-config PATH` reports.
func Check(path string) error {
	_, err := Load(path)
	return err
}

// Parse parses one domain's file whose content is data; name is the file
// name its errors give. The error is always Errors.
func Parse(name string, data []byte) (*Config, error) {
	return build([]file{{name: name, data: data}})
}

func readFiles(path string) ([]file, Errors) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: pathless(err)}}
	}
	if !fi.IsDir() {
		data, err := policy.ReadFile(path)
		if err != nil {
			return nil, Errors{{File: path, Msg: err.Error()}}
		}
		return []file{{name: path, data: data}}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: pathless(err)}}
	}
	var files []file
	var errs Errors
	for _, e := range ents { // sorted by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		full := filepath.Join(path, name)
		if st, err := os.Stat(full); err != nil || !st.Mode().IsRegular() {
			continue // a dangling link, a directory, a device: not a file of the configuration
		}
		data, err := policy.ReadFile(full)
		if err != nil {
			errs = append(errs, Error{File: full, Msg: err.Error()})
			continue
		}
		files = append(files, file{name: full, data: data})
	}
	if len(files) == 0 && len(errs) == 0 {
		errs = append(errs, Error{File: path, Msg: "no *.yaml or *.yml files in the directory"})
	}
	return files, errs
}

// pathless is an operating system error without the operation and path,
// which Error already names.
func pathless(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// build parses every file and assembles the Config.
func build(files []file) (*Config, error) {
	c := &Config{domains: make(map[string]*node)}
	var errs Errors
	first := make(map[string]Error) // where each domain was set
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(strconv.Itoa(len(f.name)) + ":" + f.name + strconv.Itoa(len(f.data)) + ":"))
		h.Write(f.data)
		p := &parser{file: f.name}
		d := p.parseFile(f.data)
		slices.SortStableFunc(p.errs, func(a, b Error) int { return cmp.Compare(a.Line, b.Line) })
		errs = append(errs, p.errs...)
		if d == nil {
			continue
		}
		if prev, dup := first[d.name]; dup {
			errs = append(errs, Error{File: f.name, Line: d.line, Field: "domain",
				Msg: "duplicate domain '" + d.name + "' in config file (first in " + prev.File + ":" + strconv.Itoa(prev.Line) + ")"})
			continue
		}
		first[d.name] = Error{File: f.name, Line: d.line}
		c.domains[d.name] = d.root
		c.names = append(c.names, d.name)
		c.limits = append(c.limits, p.limits...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	slices.Sort(c.names)
	// Limits domain by domain, keeping file order within each (stable).
	slices.SortStableFunc(c.limits, func(a, b *Limit) int { return cmp.Compare(a.Domain, b.Domain) })
	c.Digest = hex.EncodeToString(h.Sum(nil))
	return c, nil
}
