package image

import (
	"archive/tar"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image is. The Dockerfile at the repository root must say the same (image_test.go).
const (
	// User is the numeric user and group (distroless' nonroot), so that Kubernetes'
	// runAsNonRoot can verify it without reading /etc/passwd.
	User = "65532:65532"
	// BinaryPath is where the binary sits in the image.
	BinaryPath = "/deltaeds"
	// WorkingDir is the process' working directory.
	WorkingDir = "/"
	// ModulePath is the main module, built from Options.Root.
	ModulePath = "github.com/deltaeds/deltaeds"
	// Repository names the image in the tarball and the layout's ref name.
	Repository = "deltaeds"

	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelSource   = "org.opencontainers.image.source"
	LabelLicenses = "org.opencontainers.image.licenses"
)

// Entrypoint is the image's entrypoint: flags given to the container are `serve` flags.
var Entrypoint = []string{BinaryPath, "serve"}

// ExposedPorts are 18000 (Delta xDS and grpc.health.v1) and 18001 (admin HTTP).
var ExposedPorts = []string{"18000/tcp", "18001/tcp"}

// StaticLabels are the labels that do not depend on the build.
var StaticLabels = map[string]string{
	LabelTitle:  "deltaeds",
	LabelSource: "https://github.com/deltaeds/deltaeds",
}

// rootfs holds the files the image carries besides the binary (the Dockerfile copies the same
// folder).
//
//go:embed rootfs
var rootfs embed.FS

// BuildEnv is the environment `go build` runs with, besides the caller's: a static binary for
// linux/arch.
func BuildEnv(arch string) []string {
	return []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
}

// BuildArgs are the arguments of `go build` for the image's binary, written to out.
func BuildArgs(version, commit, out string) []string {
	return []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags=" + LDFlags(version, commit), "-o", out, "."}
}

// LDFlags strips the symbol table and DWARF (-s -w) and sets the version and commit that
// `deltaeds version` and deltaeds_build_info show.
func LDFlags(version, commit string) string {
	return "-s -w -X main.version=" + version + " -X main.commit=" + commit
}

// Labels are the image's labels for a version and commit.
func Labels(version, commit string) map[string]string {
	l := map[string]string{LabelVersion: version, LabelRevision: commit}
	for k, v := range StaticLabels {
		l[k] = v
	}
	return l
}

// Options say what to build and where to write it.
type Options struct {
	Root    string // repository root: the folder of the main module's go.mod
	Version string
	Commit  string
	Arch    string // GOARCH
	// Created is the image's creation time and every file's mtime; zero means the Unix epoch,
	// so that the same inputs give the same digest.
	Created time.Time
	Layout  string // OCI layout folder to write ("" for none); replaced if it exists
	Tarball string // docker-loadable tarball to write ("" for none)
	// Binary, if set, is used instead of building one (it must have been built with
	// BuildEnv and BuildArgs).
	Binary string
	// Go is the go command (default "go").
	Go string
}

// Result is what Build wrote.
type Result struct {
	Image   v1.Image
	Ref     name.Tag
	Digest  v1.Hash
	Layout  string
	Tarball string
}

// Where says where the image was written.
func (r Result) Where() string {
	var w []string
	if r.Layout != "" {
		w = append(w, "OCI layout "+r.Layout)
	}
	if r.Tarball != "" {
		w = append(w, "tarball "+r.Tarball)
	}
	return strings.Join(w, ", ")
}

// tagRe is what a tag may be (the distribution spec's grammar).
var tagRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Build compiles deltaeds (unless Options.Binary is set), assembles the image and writes it.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.Arch == "" {
		return Result{}, errors.New("image: no architecture")
	}
	if o.Version == "" || o.Commit == "" {
		return Result{}, errors.New("image: version and commit must be set")
	}
	tag := o.Version
	if !tagRe.MatchString(tag) {
		return Result{}, fmt.Errorf("image: version %q is not a valid image tag", o.Version)
	}
	ref, err := name.NewTag(Repository + ":" + tag)
	if err != nil {
		return Result{}, fmt.Errorf("image: tag: %w", err)
	}
	bin := o.Binary
	if bin == "" {
		tmp, err := os.MkdirTemp("", "deltaeds-image-")
		if err != nil {
			return Result{}, fmt.Errorf("image: %w", err)
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "deltaeds")
		if err := BuildBinary(ctx, o, bin); err != nil {
			return Result{}, err
		}
	}
	img, err := Assemble(bin, o)
	if err != nil {
		return Result{}, err
	}
	dig, err := img.Digest()
	if err != nil {
		return Result{}, fmt.Errorf("image: digest: %w", err)
	}
	res := Result{Image: img, Ref: ref, Digest: dig}
	if o.Layout != "" {
		if err := WriteLayout(o.Layout, img, ref); err != nil {
			return Result{}, err
		}
		res.Layout = o.Layout
	}
	if o.Tarball != "" {
		if err := os.MkdirAll(filepath.Dir(o.Tarball), 0o755); err != nil {
			return Result{}, fmt.Errorf("image: %w", err)
		}
		if err := tarball.WriteToFile(o.Tarball, ref, img); err != nil {
			return Result{}, fmt.Errorf("image: writing tarball %s: %w", o.Tarball, err)
		}
		res.Tarball = o.Tarball
	}
	return res, nil
}

// BuildBinary runs `go build` in o.Root with BuildEnv and BuildArgs, writing out.
func BuildBinary(ctx context.Context, o Options, out string) error {
	if err := checkRoot(o.Root); err != nil {
		return err
	}
	goCmd := o.Go
	if goCmd == "" {
		goCmd = "go"
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	cmd := exec.CommandContext(ctx, goCmd, BuildArgs(o.Version, o.Commit, out)...)
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), BuildEnv(o.Arch)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("image: go build in %s: %w\n%s", o.Root, err, b)
	}
	return nil
}

// checkRoot fails unless root holds the main module's go.mod.
func checkRoot(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return fmt.Errorf("image: repository root: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if strings.TrimSpace(first) != "module "+ModulePath {
		return fmt.Errorf("image: %s is not the root of %s", root, ModulePath)
	}
	return nil
}

// Assemble makes the image from a built binary: one layer (rootfs/ and the binary, owned by
// root, mtimes at o.Created) on an empty base, with the OCI media types.
func Assemble(binary string, o Options) (v1.Image, error) {
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	layerTar, err := layerTar(binary, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	ports := make(map[string]struct{}, len(ExposedPorts))
	for _, p := range ExposedPorts {
		ports[p] = struct{}{}
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "deltaeds-image: rootfs/ and " + BinaryPath,
			Comment:   "go " + strings.Join(BuildArgs(o.Version, o.Commit, BinaryPath), " "),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = o.Arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   append([]string(nil), Entrypoint...),
		WorkingDir:   WorkingDir,
		ExposedPorts: ports,
		Labels:       Labels(o.Version, o.Commit),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return img, nil
}

// layerTar is the layer's uncompressed tar: the folders and files of rootfs/, then the binary.
func layerTar(binary string, mtime time.Time) ([]byte, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("image: binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(name string, typ byte, mode int64, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, ModTime: mtime,
			Uname: "root", Gname: "root", Format: tar.FormatPAX}
	}
	var paths []string
	err = fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "rootfs" {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("image: rootfs: %w", err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel := strings.TrimPrefix(p, "rootfs/")
		st, err := fs.Stat(rootfs, p)
		if err != nil {
			return nil, fmt.Errorf("image: rootfs: %w", err)
		}
		if st.IsDir() {
			if err := tw.WriteHeader(hdr(rel+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return nil, fmt.Errorf("image: layer: %w", err)
			}
			continue
		}
		b, err := rootfs.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("image: rootfs: %w", err)
		}
		if err := tw.WriteHeader(hdr(rel, tar.TypeReg, 0o644, int64(len(b)))); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
		if _, err := tw.Write(b); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
	}
	if err := tw.WriteHeader(hdr(path.Base(BinaryPath), tar.TypeReg, 0o755, int64(len(bin)))); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteLayout writes img as the only image of a new OCI layout at dir, named ref.
func WriteLayout(dir string, img v1.Image, ref name.Tag) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
	})); err != nil {
		return fmt.Errorf("image: layout %s: %w", dir, err)
	}
	return nil
}

// ReadLayout returns the only image of the OCI layout at dir.
func ReadLayout(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image: layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image: layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image: layout %s: %w", dir, err)
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("image: layout %s holds %d manifests, want 1", dir, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("image: layout %s: %w", dir, err)
	}
	return img, nil
}
