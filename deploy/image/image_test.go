package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/deltaeds/deltaeds/deploy/image"
)

// The build under test: made once by TestMain with the same code path as `make image`.
const (
	testVersion = "v0.0.0-imagetest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

var (
	built     image.Result
	builtBin  string // the binary the image was assembled from
	repoRoot  string
	buildTook time.Duration
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	tmp, err := os.MkdirTemp("", "deltaeds-imagetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	o := image.Options{Root: root, Version: testVersion, Commit: testCommit, Arch: runtime.GOARCH,
		Layout: filepath.Join(tmp, "oci"), Tarball: filepath.Join(tmp, "deltaeds.tar")}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	builtBin = filepath.Join(tmp, "deltaeds")
	if err := image.BuildBinary(ctx, o, builtBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	o.Binary = builtBin
	if built, err = image.Build(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buildTook = time.Since(start)
	return m.Run()
}

// layerFiles lists the image's filesystem: path -> header (the image has one layer).
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs := map[string]*tar.Header{}
	data := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the image's filesystem: %v", err)
		}
		p := "/" + strings.TrimSuffix(path.Clean(h.Name), "/")
		hdrs[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("reading %s: %v", p, err)
			}
			data[p] = b
		}
	}
	return hdrs, data
}

func TestImage(t *testing.T) {
	t.Logf("binary and image built in %v; %s %s", buildTook.Round(time.Millisecond), built.Ref, built.Digest)
	img, err := image.ReadLayout(built.Layout)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != built.Digest {
		t.Errorf("layout holds %s, built %s", d, built.Digest)
	}
	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want %q", mt, err, types.OCIManifestSchema1)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("manifest: config %q, layers %+v; want OCI config and one OCI layer", m.Config.MediaType, m.Layers)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want the numeric nonroot user 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/deltaeds", "serve"}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if c.Labels["org.opencontainers.image.version"] != testVersion || c.Labels["org.opencontainers.image.revision"] != testCommit {
		t.Errorf("labels %v: want version %s and revision %s", c.Labels, testVersion, testCommit)
	}
	if len(c.Volumes) != 0 {
		t.Errorf("volumes %v: the image writes nowhere", c.Volumes)
	}

	hdrs, data := layerFiles(t, img)
	var names []string
	for p, h := range hdrs {
		names = append(names, p)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root (the process, 65532, can read but not change it)", p, h.Uid, h.Gid)
		}
		if h.Mode&0o022 != 0 {
			t.Errorf("%s mode %o is group or world writable", p, h.Mode)
		}
	}
	sort.Strings(names)
	want := []string{"/deltaeds", "/etc", "/etc/group", "/etc/passwd"}
	if !slices.Equal(names, want) {
		t.Errorf("image files %q, want exactly %q (no shell, nothing else)", names, want)
	}
	if h := hdrs["/deltaeds"]; h == nil || h.Mode&0o111 == 0 {
		t.Fatalf("/deltaeds missing or not executable")
	}
	if !strings.Contains(string(data["/etc/passwd"]), ":65532:65532:") {
		t.Errorf("/etc/passwd has no 65532 user:\n%s", data["/etc/passwd"])
	}

	// The binary: static, with the build flags.
	bin := data["/deltaeds"]
	ef, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("/deltaeds is not ELF: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("/deltaeds has a program interpreter: it is dynamically linked")
		}
	}
	if libs, err := ef.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("/deltaeds needs shared libraries %q (%v)", libs, err)
	}
	if ef.Section(".symtab") != nil {
		t.Errorf("/deltaeds has a symbol table: not built with -s")
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("build info of /deltaeds: %v", err)
	}
	if bi.Path != image.ModulePath {
		t.Errorf("binary's main package %q", bi.Path)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, v := range map[string]string{
		"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": runtime.GOARCH, "-trimpath": "true",
	} {
		if settings[k] != v {
			t.Errorf("binary built with %s=%q, want %q", k, settings[k], v)
		}
	}
	// With -trimpath Go does not record -ldflags; the -X values are in the binary's data (and
	// `deltaeds version` under runc prints them), -s shows as the missing .symtab above.
	for _, s := range []string{testVersion, testCommit} {
		if !bytes.Contains(bin, []byte(s)) {
			t.Errorf("binary does not contain %q: -X main.version/main.commit not applied", s)
		}
	}
	if _, ok := settings["vcs.revision"]; ok {
		t.Errorf("binary has a VCS stamp: not built with -buildvcs=false")
	}
}

// TestTarball: the docker-loadable tarball holds the same image as the layout.
func TestTarball(t *testing.T) {
	img, err := tarball.ImageFromPath(built.Tarball, &built.Ref)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := built.Image.ConfigName()
	if got, _ := img.ConfigName(); got != want {
		t.Errorf("tarball config %s, layout config %s", got, want)
	}
	if cf.Config.User != image.User {
		t.Errorf("tarball user %q", cf.Config.User)
	}
}

// TestReproducible: the same binary and options give the same image.
func TestReproducible(t *testing.T) {
	o := image.Options{Root: repoRoot, Version: testVersion, Commit: testCommit, Arch: runtime.GOARCH, Binary: builtBin}
	a, err := image.Assemble(builtBin, o)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	if da != built.Digest {
		t.Errorf("assembled again: %s, first %s", da, built.Digest)
	}
}

// dockerEnv is the build arguments a Dockerfile stage sees: ARG defaults, overridden by
// --build-arg, and the automatic platform arguments.
type dockerEnv map[string]string

func (e dockerEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e dockerEnv) Keys() []string {
	var ks []string
	for k := range e {
		ks = append(ks, k)
	}
	return ks
}

// dockerImage is what the Dockerfile's final stage makes, read with BuildKit's own parser.
type dockerImage struct {
	base       string
	user       string
	workdir    string
	entrypoint []string
	ports      []string
	labels     map[string]string
	files      []string // image paths
	// the `go build` of the stage the binary is copied from
	goEnv    []string
	goArgs   []string
	buildDir string
}

// parseDockerfile reads the Dockerfile as `docker build --build-arg VERSION=... --build-arg
// COMMIT=...` for linux/arch would.
func parseDockerfile(t *testing.T, file string, buildArgs map[string]string, arch string) dockerImage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	lex := shell.NewLex(res.EscapeToken)
	envFor := func() dockerEnv {
		return dockerEnv{"TARGETOS": "linux", "TARGETARCH": arch, "TARGETPLATFORM": "linux/" + arch}
	}
	type stageOut struct {
		goEnv, goArgs []string
		workdir       string
	}
	byName := map[string]stageOut{}
	var out dockerImage
	for i, st := range stages {
		env := envFor()
		expand := func(w string) (string, error) {
			r, err := lex.ProcessWordWithMatches(w, env)
			return r.Result, err
		}
		final := i == len(stages)-1
		var so stageOut
		out = dockerImage{base: st.BaseName, labels: map[string]string{}}
		for _, cmd := range st.Commands {
			if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
				if err := ex.Expand(expand); err != nil {
					t.Fatalf("%s: expanding %s: %v", file, cmd.Name(), err)
				}
			}
			switch c := cmd.(type) {
			case *instructions.ArgCommand:
				for _, a := range c.Args {
					if v, ok := buildArgs[a.Key]; ok {
						env[a.Key] = v
					} else if _, ok := env[a.Key]; !ok && a.Value != nil {
						env[a.Key] = *a.Value
					}
				}
			case *instructions.WorkdirCommand:
				so.workdir = c.Path
				out.workdir = c.Path
			case *instructions.RunCommand:
				if !c.PrependShell || len(c.CmdLine) != 1 {
					continue
				}
				words, err := lex.ProcessWords(c.CmdLine[0], env)
				if err != nil {
					t.Fatalf("%s: RUN %s: %v", file, c.CmdLine[0], err)
				}
				var assigns []string
				for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
					assigns, words = append(assigns, words[0]), words[1:]
				}
				if len(words) >= 2 && words[0] == "go" && words[1] == "build" {
					so.goEnv, so.goArgs = assigns, words[1:]
				}
			case *instructions.UserCommand:
				out.user = c.User
			case *instructions.EntrypointCommand:
				if c.PrependShell {
					t.Errorf("%s: ENTRYPOINT in shell form needs a shell the image has not", file)
				}
				out.entrypoint = c.CmdLine
			case *instructions.ExposeCommand:
				for _, p := range c.Ports {
					if !strings.Contains(p, "/") {
						p += "/tcp"
					}
					out.ports = append(out.ports, p)
				}
			case *instructions.LabelCommand:
				for _, kv := range c.Labels {
					out.labels[kv.Key] = kv.Value
				}
			case *instructions.CopyCommand:
				if !final {
					continue
				}
				if len(c.SourcePaths) != 1 {
					t.Fatalf("%s: COPY %q: one source per COPY, please", file, c.SourcePaths)
				}
				src, dst := c.SourcePaths[0], c.DestPath
				if c.From == "" {
					// From the build context: a folder's contents land under dst.
					dir := filepath.Join(repoRoot, filepath.FromSlash(src))
					err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
						if err != nil || d.IsDir() {
							return err
						}
						rel, _ := filepath.Rel(dir, p)
						out.files = append(out.files, path.Join(dst, filepath.ToSlash(rel)))
						return nil
					})
					if err != nil {
						t.Fatalf("%s: COPY %s: %v", file, src, err)
					}
					continue
				}
				from, ok := byName[c.From]
				if !ok || from.goArgs == nil {
					t.Fatalf("%s: COPY --from=%s: no such stage with a go build", file, c.From)
				}
				if o := slices.Index(from.goArgs, "-o"); o < 0 || o+1 >= len(from.goArgs) || from.goArgs[o+1] != src {
					t.Errorf("%s: COPY --from=%s %s: the stage's go build writes elsewhere (%q)", file, c.From, src, from.goArgs)
				}
				out.files = append(out.files, dst)
				out.goEnv, out.goArgs, out.buildDir = from.goEnv, from.goArgs, from.workdir
			}
		}
		byName[st.Name] = so
	}
	sort.Strings(out.files)
	return out
}

// TestDockerfileAgrees: `docker build` of the Dockerfile makes what `make image` makes: the same
// go build (environment, flags, package), files, user, working directory, entrypoint, ports and
// labels. The Dockerfile is read with BuildKit's parser and shell lexer, so quoting, line
// continuations and ARG expansion are Docker's.
func TestDockerfileAgrees(t *testing.T) {
	arch := runtime.GOARCH
	d := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"),
		map[string]string{"VERSION": testVersion, "COMMIT": testCommit}, arch)

	if d.base != "scratch" {
		t.Errorf("final stage FROM %s; the image is built on an empty base (scratch)", d.base)
	}
	envWant := image.BuildEnv(arch)
	envGot := slices.Clone(d.goEnv)
	slices.Sort(envWant)
	slices.Sort(envGot)
	if !slices.Equal(envGot, envWant) {
		t.Errorf("Dockerfile's go build environment %q, builder's %q", envGot, envWant)
	}
	binOut := "/out/deltaeds"
	if o := slices.Index(d.goArgs, "-o"); o >= 0 && o+1 < len(d.goArgs) {
		binOut = d.goArgs[o+1]
	}
	if want := image.BuildArgs(testVersion, testCommit, binOut); !slices.Equal(d.goArgs, want) {
		t.Errorf("Dockerfile's go command\n  %q\nbuilder's\n  %q", d.goArgs, want)
	}
	if d.user != image.User {
		t.Errorf("Dockerfile USER %q, builder %q", d.user, image.User)
	}
	if d.workdir != image.WorkingDir {
		t.Errorf("Dockerfile WORKDIR %q, builder %q", d.workdir, image.WorkingDir)
	}
	if !slices.Equal(d.entrypoint, image.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %q, builder %q", d.entrypoint, image.Entrypoint)
	}
	ports := slices.Clone(image.ExposedPorts)
	slices.Sort(ports)
	slices.Sort(d.ports)
	if !slices.Equal(d.ports, ports) {
		t.Errorf("Dockerfile EXPOSE %q, builder %q", d.ports, ports)
	}
	if want := image.Labels(testVersion, testCommit); !maps.Equal(d.labels, want) {
		t.Errorf("Dockerfile LABELs %v, builder %v", d.labels, want)
	}

	// Files: the Dockerfile's COPYs against the built image's regular files.
	hdrs, _ := layerFiles(t, built.Image)
	var files []string
	for p, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			files = append(files, p)
		}
	}
	sort.Strings(files)
	if !slices.Equal(d.files, files) {
		t.Errorf("Dockerfile copies %q, the image holds %q", d.files, files)
	}
}
