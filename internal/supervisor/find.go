package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// module is floodgate's module path.
const module = "github.com/floodgate-rl/floodgate"

// ModuleRoot returns the directory holding floodgate's go.mod at or above
// dir.
func ModuleRoot(dir string) (string, error) {
	for d := dir; ; {
		if isModuleRoot(d) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of module %s at or above %s", module, dir)
		}
		d = parent
	}
}

// isModuleRoot reports whether dir holds floodgate's go.mod.
func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == module
		}
	}
	return false
}

// FindEnvoy returns the Envoy binary: $FLOODGATE_ENVOY, else
// <root>/.tools/bin/envoy or <root>/.tools/venv/bin/envoy (where `make
// deps` installs it), else envoy in PATH. It returns "" when there is none,
// and an error when FLOODGATE_ENVOY names something that is not an
// executable file. root may be "" to look only at the variable and PATH.
func FindEnvoy(root string) (string, error) {
	if p := os.Getenv("FLOODGATE_ENVOY"); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("FLOODGATE_ENVOY=%s: not an executable file", p)
		}
		return p, nil
	}
	if root != "" {
		for _, p := range []string{
			filepath.Join(root, ".tools", "bin", "envoy"),
			filepath.Join(root, ".tools", "venv", "bin", "envoy"),
		} {
			if isExecutable(p) {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", nil
}

// FindMemcached returns the memcached binary in PATH, /usr/bin or
// /usr/local/bin, or "" when there is none.
func FindMemcached() string {
	if p, err := exec.LookPath("memcached"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
		if isExecutable(p) {
			return p
		}
	}
	return ""
}

// isExecutable reports whether p is a regular file with an execute bit.
func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
