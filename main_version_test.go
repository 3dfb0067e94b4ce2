package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeBuildStampsCommit: `make build` passes the commit with -ldflags, so `deltaeds version`
// shows it even when Go embeds no VCS stamp (-buildvcs=false).
func TestMakeBuildStampsCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "deltaeds")
	build := exec.Command("make", "--no-print-directory", "build", "BIN="+bin)
	build.Env = append(build.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("deltaeds version: %v", err)
	}
	if want := "(commit " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) {
		t.Fatalf("deltaeds version = %q, want it to contain %q", out, want)
	}
}
