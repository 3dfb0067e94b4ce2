package controlplane

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvTestbin names the environment variable that overrides where the binaries are looked up.
const EnvTestbin = "DELTAEDS_TESTBIN"

// modulePath is the main module, whose root holds .testbin/.
const modulePath = "github.com/deltaeds/deltaeds"

// Binary names, as `make testbin` writes them.
const (
	binEtcd              = "etcd"
	binAPIServer         = "kube-apiserver"
	binControllerManager = "kube-controller-manager"
	binKubectl           = "kubectl"
)

// BinDir returns the folder holding etcd, kube-apiserver, kube-controller-manager and kubectl:
// $DELTAEDS_TESTBIN when set, else .testbin/ in the root of the main module, found by walking up
// from the working directory (tests run in their package's folder). It does not check the folder.
func BinDir() (string, error) {
	if d := os.Getenv(EnvTestbin); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("controlplane: locating .testbin: %w", err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		return "", fmt.Errorf("controlplane: locating .testbin (set %s to override): %w", EnvTestbin, err)
	}
	return filepath.Join(root, ".testbin"), nil
}

// ModuleRoot walks up from dir to the folder whose go.mod declares the main module (where
// .testbin/ lives and deltaeds is built from). Other go.mod
// files on the way (nested modules) are passed over.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		if m, err := moduleOf(filepath.Join(d, "go.mod")); err == nil && m == modulePath {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod for module %s in %s or any parent", modulePath, dir)
		}
		d = parent
	}
}

// moduleOf reads the module path from a go.mod file.
func moduleOf(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no module line")
}

// findBinaries resolves the named binaries in dir and fails, saying how to build them, when one
// is missing or not executable.
func findBinaries(dir string, names ...string) (map[string]string, error) {
	paths := make(map[string]string, len(names))
	var missing []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			missing = append(missing, n)
			continue
		}
		paths[n] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("controlplane: %s not found in %s: run `make testbin` at the repository root "+
			"(or point %s at a folder holding them)", strings.Join(missing, ", "), dir, EnvTestbin)
	}
	return paths, nil
}
