package controlplane

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestControlPlane drives the real EndpointSlice controller with the kubelet helpers, then takes
// kube-apiserver down and back up and checks that clients recover and etcd kept the data.
func TestControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	begin := time.Now()
	var logs syncBuffer
	cp, err := Start(ctx, Options{ControllerManager: true, LogTo: &logs})
	if err != nil {
		t.Fatal(err) // never skip: CI builds the binaries (make testbin) before the tests
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = cp.Stop()
		}
	}()
	t.Logf("control plane ready in %v at %s", time.Since(begin).Round(time.Millisecond), cp.APIServerURL())
	defer func() {
		if t.Failed() {
			for _, c := range []string{Etcd, APIServer, ControllerManager} {
				t.Logf("--- %s ---\n%s", c, cp.LogTail(c, 30))
			}
		}
	}()

	// The kubeconfig is for subprocesses: check it is there and points at the server.
	kc, err := os.ReadFile(cp.KubeconfigPath())
	if err != nil {
		t.Fatalf("reading the kubeconfig: %v", err)
	}
	if !strings.Contains(string(kc), "server: "+cp.APIServerURL()) {
		t.Fatalf("kubeconfig does not name %s:\n%s", cp.APIServerURL(), kc)
	}

	// A client built from RESTConfig, as the code under test would build one.
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	const ns = "shop"
	if _, err := cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.CreateNode(ctx, "node-a", "zone-a"); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service: %v", err)
	}
	ports := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	pods := map[string]string{"web-1": "10.244.0.11", "web-2": "10.244.0.12"}
	for name, ip := range pods {
		if _, err := cp.CreatePod(ctx, ns, name, "node-a", map[string]string{"app": "web"}, ports); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.SetPodStatus(ctx, ns, name, ip, true); err != nil {
			t.Fatal(err)
		}
	}

	want := []string{"10.244.0.11 ready", "10.244.0.12 ready"}
	waitEndpoints(ctx, t, client, ns, "web", want)

	// Outage: requests fail while kube-apiserver is down...
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	func() {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		if _, err := client.CoreV1().Namespaces().Get(rctx, ns, metav1.GetOptions{}); err == nil {
			t.Fatal("Get succeeded with kube-apiserver stopped")
		} else {
			t.Logf("with kube-apiserver down: %v", err)
		}
	}()

	// ...and work again, with the same client, once it is back on the same port.
	begin = time.Now()
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver back in %v", time.Since(begin).Round(time.Millisecond))
	if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	got, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(got.Items) != 2 {
		t.Fatalf("pods after restart: %v, %v (want 2)", got, err)
	}
	if _, err := client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("service after restart: %v", err)
	}
	waitEndpoints(ctx, t, client, ns, "web", want)

	// The controller manager reconnected: it still follows pod changes.
	if _, err := cp.SetPodStatus(ctx, ns, "web-2", pods["web-2"], false); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(ctx, t, client, ns, "web", []string{"10.244.0.11 ready", "10.244.0.12 not-ready"})
	// A graceful delete leaves the pod terminating, still serving; a force delete removes it.
	if err := cp.DeletePod(ctx, ns, "web-1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(ctx, t, client, ns, "web", []string{"10.244.0.11 terminating-serving", "10.244.0.12 not-ready"})
	if err := cp.DeletePod(ctx, ns, "web-1", 0); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(ctx, t, client, ns, "web", []string{"10.244.0.12 not-ready"})

	dir := cp.Dir()
	stopped = true
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop left %s behind (stat: %v)", dir, err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// goleak (TestMain) checks that no goroutine outlives Stop.

	for _, c := range []string{Etcd, APIServer, ControllerManager} {
		if !strings.Contains(logs.String(), "\n["+c+"] ") {
			t.Errorf("LogTo got no line from %s", c)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes LogTo gets.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitEndpoints waits until the Service's EndpointSlices list exactly want, each "IP state".
func waitEndpoints(ctx context.Context, t *testing.T, c kubernetes.Interface, ns, svc string, want []string) {
	t.Helper()
	var (
		got  []string
		last error
	)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
		})
		if last = err; err != nil {
			return false, nil
		}
		got = endpointStates(list.Items)
		return slices.Equal(got, want), nil
	})
	if err != nil {
		t.Fatalf("EndpointSlices of %s/%s: got %q (last error %v), want %q: %v", ns, svc, got, last, want, err)
	}
}

func endpointStates(items []discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range items {
		for _, e := range s.Endpoints {
			state := "not-ready"
			switch {
			case isTrue(e.Conditions.Terminating) && isTrue(e.Conditions.Serving):
				state = "terminating-serving"
			case isTrue(e.Conditions.Terminating):
				state = "terminating"
			case isTrue(e.Conditions.Ready):
				state = "ready"
			}
			for _, a := range e.Addresses {
				out = append(out, a+" "+state)
			}
		}
	}
	slices.Sort(out)
	return out
}

func isTrue(b *bool) bool { return b != nil && *b }

func TestMissingBinaries(t *testing.T) {
	t.Setenv(EnvTestbin, t.TempDir())
	_, err := Start(context.Background(), Options{})
	if err == nil || !strings.Contains(err.Error(), "make testbin") {
		t.Fatalf("Start without binaries: %v, want an error saying to run make testbin", err)
	}
}

func TestBinDirWalksUpToModuleRoot(t *testing.T) {
	t.Setenv(EnvTestbin, "")
	got, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// Tests run in the package folder, internal/controlplane: the root is two levels up.
	wd, _ := os.Getwd()
	if want := filepath.Join(filepath.Dir(filepath.Dir(wd)), ".testbin"); got != want {
		t.Fatalf("BinDir() = %s, want %s", got, want)
	}
}

// TestNotImportedByProduct guards the package's first rule: the product binary never links it.
func TestNotImportedByProduct(t *testing.T) {
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps of the product: %v", err)
	}
	// The test-only packages: everything under e2e/ and this package's neighbours in internal/.
	testOnly := []string{"/e2e/", "/envoysim", "/internal/controlplane", "/internal/testpki",
		"/internal/supervisor", "/internal/envoyfleet", "/internal/scrape"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, p := range testOnly {
			if strings.HasPrefix(pkg, modulePath+p) {
				t.Errorf("the product binary imports %s", pkg)
			}
		}
	}
}
