package helm_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/kubeaccess"
)

// The Prometheus Operator module whose CRDs (example/prometheus-operator-crd/, generated from its
// Go types) the dry-run installs, so that ServiceMonitor, PodMonitor and PrometheusRule are
// checked against their real schemas. Fetched through the Go module proxy into the module cache
// (checksum-verified), not a dependency of this module.
const (
	prometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator"
	prometheusOperatorVer    = "v0.85.0"
	prometheusOperatorCRDs   = "example/prometheus-operator-crd"
)

var prometheusOperatorCRDFiles = []string{
	"monitoring.coreos.com_servicemonitors.yaml",
	"monitoring.coreos.com_podmonitors.yaml",
	"monitoring.coreos.com_prometheusrules.yaml",
}

type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// applier applies objects with server-side apply, strict field validation, through a REST mapper
// made from discovery when the applier was made.
type applier func(u *unstructured.Unstructured, dryRun bool) error

func newApplier(ctx context.Context, t *testing.T, cfg *rest.Config) applier {
	t.Helper()
	a, err := kubeaccess.NewApplier(cfg, "deltaeds-helm-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return func(u *unstructured.Unstructured, dryRun bool) error { return a.Apply(ctx, u, dryRun) }
}

// installPrometheusOperatorCRDs installs the CRDs of ServiceMonitor, PodMonitor and
// PrometheusRule from the Prometheus Operator module and waits until they are established and
// discoverable.
func installPrometheusOperatorCRDs(ctx context.Context, t *testing.T, cfg *rest.Config) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", prometheusOperatorModule+"@"+prometheusOperatorVer)
	cmd.Dir = t.TempDir() // outside any module: the download touches no go.mod
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Error != "" || mod.Dir == "" {
		t.Fatalf("go mod download %s@%s (the CRDs): %v %v %s", prometheusOperatorModule, prometheusOperatorVer, err, jerr, mod.Error)
	}
	apply := newApplier(ctx, t, cfg)
	var names []string
	for _, f := range prometheusOperatorCRDFiles {
		for _, crd := range decodeAll(t, readFile(t, filepath.Join(mod.Dir, prometheusOperatorCRDs, f))) {
			if err := apply(crd, false); err != nil {
				t.Fatalf("install the CRD: %v", err)
			}
			names = append(names, crd.GetName())
		}
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			crd, err := dyn.Resource(crds).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				c := c.(map[string]any)
				established = established || (c["type"] == "Established" && c["status"] == "True")
			}
			if !established {
				return false, nil
			}
		}
		// And served: discovery lists the group.
		groups, err := discovery.NewDiscoveryClientForConfigOrDie(cfg).ServerResourcesForGroupVersion("monitoring.coreos.com/v1")
		return err == nil && len(groups.APIResources) >= len(names), nil
	}); err != nil {
		t.Fatalf("CRDs %v not established: %v", names, err)
	}
	t.Logf("installed the CRDs %v from %s@%s", names, prometheusOperatorModule, prometheusOperatorVer)
}

// baseNamespace is the kustomize base's Namespace: the release namespace, with its Pod Security
// labels (restricted enforced and warned), so the dry-run checks the pod template against them.
func baseNamespace(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	ns := mustFind(t, renderBase(t), "Namespace", releaseNamespace)
	if ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("the base's Namespace is not restricted: %v", ns.GetLabels())
	}
	return ns
}

func namespace(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	return u
}

// TestServerSideDryRun applies every object of every rendering (defaults, mTLS, monitoring,
// node locality, namespaced, NetworkPolicy, everything at once) with server-side apply, dryRun=All
// and strict field validation, to a real kube-apiserver with the Prometheus Operator's CRDs:
// schemas, defaults, admission (Pod Security "restricted" on the base's Namespace) and RBAC
// references are all checked. Any warning fails.
func TestServerSideDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	var warn warnings
	cfg := rest.CopyConfig(cp.RESTConfig())
	cfg.WarningHandler = &warn

	installPrometheusOperatorCRDs(ctx, t, cfg)
	warn.take() // the CRDs are not ours
	apply := newApplier(ctx, t, cfg)
	// Namespaced dry-runs need their namespace to exist: create them for real.
	for _, ns := range []*unstructured.Unstructured{baseNamespace(t), namespace("shop"), namespace("web")} {
		if err := apply(ns, false); err != nil {
			t.Fatal(err)
		}
	}
	if w := warn.take(); len(w) > 0 {
		t.Fatalf("warnings creating the namespaces: %v", w)
	}

	var names []string
	for name := range renderings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		objs := mustRenderChart(t, renderings[name])
		for _, u := range objs {
			if err := apply(u, true); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			for _, w := range warn.take() {
				t.Errorf("%s: %s: warning: %s", name, key(u), w)
			}
		}
		t.Logf("%s: %d objects accepted: %v", name, len(objs), kinds(objs))
	}
}

// TestRBACIsLeastPrivilege applies the chart's ServiceAccount and RBAC for real, for four
// releases (defaults; node locality and rbac.services on; zone from node and
// internalTrafficPolicy on; watching two namespaces), to a
// kube-apiserver running the RBAC authorizer, then asks it with SubjectAccessReviews as each
// release's ServiceAccount what deltaeds may do: read EndpointSlices where it watches and the API
// server's /readyz; Nodes and Services only when toggled; nothing else (no Secrets, no writes).
func TestRBACIsLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	apply := newApplier(ctx, t, rest.CopyConfig(cp.RESTConfig()))
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	for _, ns := range []string{"shop", "web"} {
		if err := apply(namespace(ns), false); err != nil {
			t.Fatal(err)
		}
	}

	type attr = kubeaccess.Access
	slices := func(verb, ns string) attr {
		return attr{Verb: verb, Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: ns}
	}
	readyz := attr{Verb: "get", Path: "/readyz"}
	core := func(verb, resource, ns string) attr { return attr{Verb: verb, Resource: resource, Namespace: ns} }
	// Never, in any release.
	never := []attr{
		core("get", "secrets", ""), core("list", "secrets", ""), core("get", "secrets", "shop"),
		slices("create", "shop"), slices("update", "shop"), slices("patch", "shop"), slices("delete", "shop"), slices("deletecollection", ""),
		core("list", "pods", ""), core("list", "endpoints", ""), core("list", "configmaps", ""),
		core("update", "nodes", ""), core("patch", "nodes", ""), core("update", "services", "shop"), core("create", "services", "shop"),
		{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "shop"},
		core("create", "events", "shop"),
		core("impersonate", "serviceaccounts", ""),
		{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "get", Path: "/metrics"},
	}
	nodes := []attr{core("get", "nodes", ""), core("list", "nodes", ""), core("watch", "nodes", "")}
	services := []attr{core("get", "services", "shop"), core("list", "services", ""), core("watch", "services", "")}
	clusterSlices := []attr{slices("list", ""), slices("watch", ""), slices("get", "shop"), slices("list", "kube-system")}

	for _, c := range []struct {
		release string
		vals    map[string]any
		allowed []attr
		denied  []attr
	}{
		// The defaults, like the kustomize base, turn --zone-from-node on.
		{release: "plain", vals: nil,
			allowed: append(append(clusterSlices, readyz), nodes...),
			denied:  append(services, never...)},
		{release: "minimal", vals: map[string]any{"serve": map[string]any{"zoneFromNode": false}},
			allowed: append(clusterSlices, readyz),
			denied:  append(append(nodes, services...), never...)},
		{release: "deltaeds", vals: map[string]any{"serve": map[string]any{"nodeLocality": true}, "rbac": map[string]any{"services": true}},
			allowed: append(append(append(clusterSlices, readyz), nodes...), services...),
			denied:  never},
		{release: "views", vals: renderings["views"],
			allowed: append(append(append(clusterSlices, readyz), nodes...), services...),
			denied:  never},
		{release: "scoped", vals: renderings["namespaced"],
			allowed: append([]attr{slices("list", "shop"), slices("watch", "shop"), slices("get", "shop"), slices("list", "web"), slices("watch", "web"), readyz}, nodes...),
			denied:  append(append([]attr{slices("list", ""), slices("watch", ""), slices("list", "kube-system")}, services...), never...)},
	} {
		if err := apply(namespace(c.release), false); err != nil {
			t.Fatal(err)
		}
		objs, err := renderChart(t, c.release, c.release, c.vals)
		if err != nil {
			t.Fatal(err)
		}
		var sa *unstructured.Unstructured
		for _, u := range objs {
			switch u.GetKind() {
			case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
				if u.GetKind() == "ServiceAccount" {
					sa = u
				}
				if err := apply(u, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		if sa == nil {
			t.Fatalf("%s: the chart renders no ServiceAccount", c.release)
		}
		reviewer := kubeaccess.ServiceAccount(client, sa.GetNamespace(), sa.GetName())
		user := reviewer.User()
		review := func(a attr) bool {
			t.Helper()
			ok, err := reviewer.Allowed(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		// Each toggle has a binding of its own: wait until every needed permission is granted
		// (the authorizer sees just-applied bindings a moment later) before judging what must
		// be denied.
		missing, err := reviewer.WaitGranted(ctx, c.allowed, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("%s: deltaeds may not %+v; it needs to", c.release, missing)
			continue
		}
		wrong := 0
		for _, a := range c.denied {
			if review(a) {
				t.Errorf("%s: deltaeds may %+v; it needs not", c.release, a)
				wrong++
			}
		}
		if wrong > 0 {
			continue
		}
		t.Logf("%s (%s): %d permissions granted, %d denied as they should be", c.release, user, len(c.allowed), len(c.denied))
	}
}

// TestNamespaceIsRestricted: the namespace the README tells Helm users to create is the base's.
func TestNamespaceIsRestricted(t *testing.T) {
	ns := baseNamespace(t)
	var typed corev1.Namespace
	data, _ := json.Marshal(ns.Object)
	if err := json.Unmarshal(data, &typed); err != nil {
		t.Fatal(err)
	}
	readme := string(readFile(t, "../../README.md"))
	for k, v := range typed.Labels {
		if strings.HasPrefix(k, "pod-security.kubernetes.io/") && !strings.Contains(readme, k+"="+v) {
			t.Errorf("README.md does not tell Helm users to label the namespace %s=%s", k, v)
		}
	}
}
