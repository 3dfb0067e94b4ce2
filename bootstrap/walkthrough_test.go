package bootstrap_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/internal/controlplane"
)

// TestGettingEnvoysOnDeltaeds walks the README's "Getting your Envoys on deltaeds" against a real
// kube-apiserver: a new bootstrap from the cluster, an existing bootstrap merged, each checked
// clean by `deltaeds check`, and a typo caught by it with a suggestion.
func TestGettingEnvoysOnDeltaeds(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	v4 := discoveryv1.AddressTypeIPv4
	for _, s := range []*discoveryv1.EndpointSlice{
		epSlice("shop", "frontend-a", "frontend", v4, port{name: "http", num: 8080}),
		epSlice("shop", "payments-a", "payments", v4, port{name: "grpc", num: 9090}),
	} {
		if _, err := client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := cp.KubeconfigPath()
	dir := t.TempDir()

	t.Run("a new bootstrap from the cluster", func(t *testing.T) {
		out := filepath.Join(dir, "new.yaml")
		if _, stderr, err, code := runBootstrap(t, ctx, "--from-cluster", "--kubeconfig", kubeconfig, "--output", out); code != 0 {
			t.Fatalf("bootstrap: code %d: %v\n%s", code, err, stderr)
		}
		if stdout, err, code := runCheck(t, ctx, "--kubeconfig", kubeconfig, out); code != 0 {
			t.Fatalf("check: code %d: %v\n%s", code, err, stdout)
		}
	})

	t.Run("an existing bootstrap merged", func(t *testing.T) {
		out := filepath.Join(dir, "merged.yaml")
		if _, stderr, err, code := runBootstrap(t, ctx, "--merge", filepath.Join("testdata", "merge", "named", "input.yaml"),
			"--convert", "frontend=shop/frontend/http", "--convert", "payments=shop/payments/grpc", "--output", out); code != 0 {
			t.Fatalf("bootstrap --merge: code %d: %v\n%s", code, err, stderr)
		}
		if stdout, err, code := runCheck(t, ctx, "--kubeconfig", kubeconfig, out); code != 0 {
			t.Fatalf("check: code %d: %v\n%s", code, err, stdout)
		}
	})

	t.Run("a typo is caught, with the name meant", func(t *testing.T) {
		out := filepath.Join(dir, "typo.yaml")
		if _, stderr, err, code := runBootstrap(t, ctx, "--cluster", "shop/frontend/https", "--output", out); code != 0 {
			t.Fatalf("bootstrap: code %d: %v\n%s", code, err, stderr)
		}
		stdout, err, code := runCheck(t, ctx, "--kubeconfig", kubeconfig, out)
		if code != bootstrap.ExitFindings {
			t.Fatalf("check: code %d (%v), want %d", code, err, bootstrap.ExitFindings)
		}
		want := out + `: static_resources.clusters[shop/frontend/https]: asks for "shop/frontend/https", which deltaeds does not publish: Envoy will route nothing to it (did you mean ["shop/frontend/http"]?)` + "\n"
		if stdout != want {
			t.Errorf("check printed\n%s\nwant\n%s", stdout, want)
		}
		// Offline, only the rules that need no cluster apply: nothing to say.
		if stdout, err, code := runCheck(t, ctx, "--offline", out); code != 0 {
			t.Errorf("check --offline: code %d: %v\n%s", code, err, stdout)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		garbage := filepath.Join(dir, "garbage.yaml")
		if err := os.WriteFile(garbage, []byte("static_resources: [1, 2"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			args []string
			code int
			msg  string
		}{
			{nil, 2, "want one BOOTSTRAP file"},
			{[]string{"--offline", filepath.Join(dir, "absent.yaml")}, 1, "no such file"},
			{[]string{"--offline", garbage}, 1, "garbage.yaml: parse: yaml"},
			{[]string{"--namespace", "Not_A_Namespace", garbage}, 2, "--namespace"},
			{[]string{"--kubeconfig", filepath.Join(dir, "absent-kubeconfig"), filepath.Join(dir, "new.yaml")}, 1, "or pass --offline"},
		} {
			_, err, code := runCheck(t, ctx, tt.args...)
			if code != tt.code || err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("check %q: code %d, error %v; want %d and %q", tt.args, code, err, tt.code, tt.msg)
			}
		}
	})
}

// runCheck runs `deltaeds check args...` (see runCommand).
//
//lint:ignore ST1008 returns what a CLI run ends with: its output, its error, then its exit code
func runCheck(t *testing.T, ctx context.Context, args ...string) (stdout string, err error, code int) {
	t.Helper()
	stdout, _, err, code = runCommand(t, ctx, bootstrap.CheckCommand(), args...)
	return stdout, err, code
}
