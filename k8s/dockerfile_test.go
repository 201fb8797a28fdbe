package k8s_test

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Line int
	Cmd  string // upper case: FROM, RUN, ...
	Args string // the rest, as written
}

// stage is one FROM ... [AS name] of a Dockerfile and its instructions.
type stage struct {
	Image, Name string
	Platform    string
	Body        []instruction
}

// parseDockerfile splits a Dockerfile into stages. It handles comments,
// parser directives, and lines continued with a backslash (the default
// escape character), which is all floodgate's Dockerfile uses.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var instrs []instruction
	var cur strings.Builder
	start := 0
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment lines inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		instrs = append(instrs, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: ends inside a continued line", path)
	}
	var stages []stage
	for _, in := range instrs {
		if in.Cmd == "FROM" {
			fields := strings.Fields(in.Args)
			st := stage{}
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				if v, ok := strings.CutPrefix(fields[0], "--platform="); ok {
					st.Platform = v
				}
				fields = fields[1:]
			}
			if len(fields) == 0 {
				t.Fatalf("%s:%d: FROM without an image", path, in.Line)
			}
			st.Image = fields[0]
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.Name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.Line, in.Cmd)
			}
			continue
		}
		stages[len(stages)-1].Body = append(stages[len(stages)-1].Body, in)
	}
	return stages
}

// shellWords splits a shell command line into words, handling single and
// double quotes and backslash escapes (no expansions).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) && strings.ContainsRune(`"\$`, rune(s[i+1])) {
				i++
				w.WriteByte(s[i])
			} else {
				w.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == ';' || c == '&' || c == '|':
			t.Fatalf("RUN %q: more than one command; keep go build a command of its own", s)
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("RUN %q: unterminated quote", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// expandArgs replaces $NAME and ${NAME} in s by vars[NAME]; an unknown
// name fails the test.
func expandArgs(t *testing.T, s string, vars map[string]string) string {
	t.Helper()
	return os.Expand(s, func(name string) string {
		v, ok := vars[name]
		if !ok {
			t.Fatalf("%q uses $%s, which no ARG of its stage declares", s, name)
		}
		return v
	})
}

// goBuild is the go build command of the Dockerfile's build stage.
type goBuild struct {
	Env    []string // NAME=value assignments before go
	Args   []string // after "go"
	Output string   // the -o value
}

// dockerGoBuild finds the RUN ... go build of stage st and returns it with
// the stage's ARGs expanded from args (which must give every ARG without a
// default that the command uses).
func dockerGoBuild(t *testing.T, st stage, args map[string]string) goBuild {
	t.Helper()
	vars := make(map[string]string)
	var build *goBuild
	for _, in := range st.Body {
		switch in.Cmd {
		case "ARG":
			for _, a := range strings.Fields(in.Args) {
				name, def, hasDef := strings.Cut(a, "=")
				if v, ok := args[name]; ok {
					vars[name] = v
				} else if hasDef {
					vars[name] = strings.Trim(def, `"`)
				}
			}
		case "RUN":
			words := shellWords(t, in.Args)
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:] // --mount=..., --network=...
			}
			var env []string
			for len(words) > 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[0]) {
				env = append(env, expandArgs(t, words[0], vars))
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				continue
			}
			if build != nil {
				t.Fatalf("Dockerfile:%d: a second go build", in.Line)
			}
			b := goBuild{Env: env}
			for _, w := range words[1:] {
				b.Args = append(b.Args, expandArgs(t, w, vars))
			}
			for i, a := range b.Args {
				if a == "-o" && i+1 < len(b.Args) {
					b.Output = b.Args[i+1]
				}
			}
			build = &b
		}
	}
	if build == nil {
		t.Fatalf("the build stage %s has no RUN go build", st.Name)
	}
	return *build
}

// TestDockerfile checks the Dockerfile's structure: a golang builder of the
// Go version go.mod asks for; a go build with CGO_ENABLED=0, -trimpath and
// the version stamped into main.version from the VERSION build argument,
// and the vtprotobuf tag the Makefile builds with; a
// final distroless static (or scratch) image that holds only floodgate,
// copied from the build stage's -o, run as its ENTRYPOINT in exec form,
// under a numeric non-root USER that every floodgate container of the
// manifests also runs as; and EXPOSE of exactly floodgate's default gRPC and
// admin ports.
func TestDockerfile(t *testing.T) {
	root := moduleRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a final one", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The builder's Go is go.mod's.
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "golang:" + string(m[1]); build.Image != want && !strings.HasPrefix(build.Image, want+".") && !strings.HasPrefix(build.Image, want+"-") {
		t.Errorf("build stage FROM %s, want %s (go.mod's go %s)", build.Image, want, m[1])
	}
	if build.Name == "" {
		t.Fatal("the build stage has no name (FROM ... AS build)")
	}

	gb := dockerGoBuild(t, build, map[string]string{"VERSION": "v9.8.7", "TARGETOS": "linux", "TARGETARCH": "amd64"})
	if !slices.Contains(gb.Env, "CGO_ENABLED=0") {
		t.Errorf("go build env %q has no CGO_ENABLED=0: the binary would need the libc the final image lacks", gb.Env)
	}
	if !slices.Contains(gb.Args, "-trimpath") {
		t.Errorf("go build %q has no -trimpath", gb.Args)
	}
	if i := slices.Index(gb.Args, "-tags"); i < 0 || i+1 == len(gb.Args) || gb.Args[i+1] != "vtprotobuf" {
		t.Errorf("go build %q has no -tags vtprotobuf: Check responses would be marshalled by reflection (authz.Codec)", gb.Args)
	}
	ldflags := ""
	for i, a := range gb.Args {
		if a == "-ldflags" && i+1 < len(gb.Args) {
			ldflags = gb.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "-ldflags="); ok {
			ldflags = v
		}
	}
	if !strings.Contains(ldflags, "-X main.version=v9.8.7") {
		t.Errorf("go build -ldflags %q does not set main.version from the VERSION build argument", ldflags)
	}
	if gb.Args[len(gb.Args)-1] != "./cmd/floodgate" {
		t.Errorf("go build builds %s, want ./cmd/floodgate", gb.Args[len(gb.Args)-1])
	}

	// The final image: distroless static or scratch, floodgate alone.
	if final.Image != "scratch" && !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(final.Image) {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debianN:nonroot or scratch", final.Image)
	}
	var copies, users, entrypoints []instruction
	var exposed []int32
	for _, in := range final.Body {
		switch in.Cmd {
		case "COPY":
			copies = append(copies, in)
		case "USER":
			users = append(users, in)
		case "ENTRYPOINT":
			entrypoints = append(entrypoints, in)
		case "EXPOSE":
			for _, p := range strings.Fields(in.Args) {
				n, err := strconv.ParseUint(strings.TrimSuffix(p, "/tcp"), 10, 16)
				if err != nil {
					t.Errorf("Dockerfile:%d: EXPOSE %s", in.Line, p)
				}
				exposed = append(exposed, int32(n))
			}
		case "RUN", "ADD":
			t.Errorf("Dockerfile:%d: %s in the final stage: it would add more than floodgate", in.Line, in.Cmd)
		}
	}
	if len(copies) != 1 {
		t.Fatalf("final stage has %d COPY instructions, want 1 (the binary)", len(copies))
	}
	cp := strings.Fields(copies[0].Args)
	if len(cp) != 3 || cp[0] != "--from="+build.Name || cp[1] != gb.Output {
		t.Errorf("final COPY %s, want --from=%s %s <dest>", copies[0].Args, build.Name, gb.Output)
	}
	dest := cp[len(cp)-1]
	if len(entrypoints) != 1 {
		t.Fatalf("final stage has %d ENTRYPOINTs, want 1", len(entrypoints))
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoints[0].Args), &ep); err != nil || len(ep) == 0 {
		t.Errorf("ENTRYPOINT %s is not in exec form (a JSON array): the image has no shell", entrypoints[0].Args)
	} else if ep[0] != dest {
		t.Errorf("ENTRYPOINT runs %s, the binary is copied to %s", ep[0], dest)
	}

	if len(users) != 1 {
		t.Fatalf("final stage has %d USER instructions, want 1", len(users))
	}
	uidStr, _, _ := strings.Cut(users[0].Args, ":")
	uid, err := strconv.ParseInt(uidStr, 10, 64)
	if err != nil || uid == 0 {
		t.Fatalf("USER %s: want a numeric non-root user, which Kubernetes can check against runAsNonRoot", users[0].Args)
	}
	for _, fc := range floodgateContainers(t) {
		u := fc.C.SecurityContext.RunAsUser
		if u == nil && fc.W.Pod().SecurityContext != nil {
			u = fc.W.Pod().SecurityContext.RunAsUser
		}
		if u == nil || *u != uid {
			t.Errorf("%s: runAsUser %v, the image's USER is %d", fc, u, uid)
		}
	}

	defaults := envDefaults(t)
	var want []int32
	for _, name := range []string{"FLOODGATE_GRPC_ADDR", "FLOODGATE_ADMIN_ADDR"} {
		_, p := splitAddr(t, name+" default", defaults[name])
		want = append(want, p)
	}
	slices.Sort(want)
	slices.Sort(exposed)
	if !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v, want floodgate's default gRPC and admin ports %v", exposed, want)
	}
}

// TestDockerBuildIsStatic runs the Dockerfile's go build, with its
// environment and flags, on the files the Docker build context holds
// (.dockerignore applied), and checks the result: an ELF binary with no
// interpreter and no dynamic section (nothing to load from the final
// image, which has no libc), and floodgate --version printing the VERSION
// the build got.
func TestDockerBuildIsStatic(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	const version = "v9.8.7-k8s-test"
	gb := dockerGoBuild(t, stages[0], map[string]string{
		"VERSION": version, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
	})

	ctxDir := t.TempDir()
	copied := dockerContext(t, root, ctxDir)
	for _, need := range []string{"go.mod", "go.sum", "cmd/floodgate/main.go"} {
		if !slices.Contains(copied, need) {
			t.Fatalf(".dockerignore leaves %s out of the build context", need)
		}
	}
	for _, f := range copied {
		for _, never := range []string{".git/", ".tools/", "bin/", "k8s/"} {
			if strings.HasPrefix(f, never) {
				t.Errorf(".dockerignore lets %s into the build context", f)
			}
		}
	}

	out := filepath.Join(t.TempDir(), "floodgate")
	args := slices.Clone(gb.Args)
	for i := range args {
		if i > 0 && args[i-1] == "-o" {
			args[i] = out
		}
	}
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), gb.Env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s in the Docker build context (env %q): %v\n%s", strings.Join(args, " "), gb.Env, err, b)
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	for _, name := range []string{".interp", ".dynamic"} {
		if f.Section(name) != nil {
			t.Errorf("the binary has a %s section: it is dynamically linked", name)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %q", libs)
	}
	v, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(v)) != "floodgate "+version {
		t.Errorf("floodgate --version = %q (%v), want %q", v, err, "floodgate "+version)
	}
}

// dockerContext copies the files of root that .dockerignore lets into the
// Docker build context to dir, and returns their paths relative to root.
func dockerContext(t *testing.T, root, dir string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	var copied []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if d.IsDir() {
			// A directory can only be skipped when no ! pattern could
			// bring back something below it.
			if excluded && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		if excluded || !d.Type().IsRegular() {
			return nil
		}
		if err := copyFile(path, filepath.Join(dir, rel)); err != nil {
			return err
		}
		copied = append(copied, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return copied
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// goTool returns the go command: the one in PATH, as go test itself runs.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
