package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/translate"
)

// port is one EndpointPort of a test slice; name "" is the unnamed port.
type port struct {
	name  string
	num   int32
	proto corev1.Protocol
}

// epSlice builds an EndpointSlice of Service svc (no label when svc is "").
func epSlice(ns, name, svc string, at discoveryv1.AddressType, ports ...port) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"team": "a"}},
		AddressType: at,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
	}
	if at == discoveryv1.AddressTypeFQDN {
		s.Endpoints[0].Addresses = []string{"db.example.com"}
	}
	if svc != "" {
		s.Labels[translate.ServiceNameLabel] = svc
	}
	for _, p := range ports {
		// As the API server stores them: it defaults the name to "" and the
		// protocol to TCP (the fake clientset does not).
		ep := discoveryv1.EndpointPort{Port: &p.num, Name: &p.name, Protocol: ptr(corev1.ProtocolTCP)}
		if p.proto != "" {
			ep.Protocol = &p.proto
		}
		s.Ports = append(s.Ports, ep)
	}
	return s
}

func clusterNames(cs []bootstrap.Cluster) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name())
	}
	return out
}

// TestListClusters derives the clusters from EndpointSlices listed through a
// fake clientset: names as serve publishes them, sorted, deduplicated,
// filtered by namespace, label selector and --exclude, and united with
// --cluster ones.
func TestListClusters(t *testing.T) {
	v4, v6, fqdn := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN
	http, grpc, unnamed := port{name: "http", num: 80}, port{name: "grpc", num: 9090}, port{num: 8080}
	world := []*discoveryv1.EndpointSlice{
		epSlice("shop", "web-a", "web", v4, http, grpc),
		epSlice("shop", "web-b", "web", v4, http),      // same port in a second slice: one cluster
		epSlice("shop", "web-c", "web", v6, http),      // and in the IPv6 slice
		epSlice("shop", "cart-a", "cart", v4, unnamed), // unnamed port: NAMESPACE/SERVICE
		epSlice("shop", "stray", "", v4, http),         // no service-name label: ignored, as serve does
		epSlice("shop", "ext", "ext", fqdn, http),      // FQDN: serve publishes nothing
		epSlice("shop", "sctp", "sig", v4, port{name: "sig", num: 36412, proto: corev1.ProtocolSCTP}),
		epSlice("ops", "dns-a", "dns", v4, port{name: "dns", num: 53, proto: corev1.ProtocolUDP}, port{name: "dns-tcp", num: 53}),
		epSlice("kube-system", "kube-dns-a", "kube-dns", v4, port{name: "dns", num: 53, proto: corev1.ProtocolUDP}),
		epSlice("kube-system", "ms-a", "metrics-server", v4, unnamed),
	}
	world[len(world)-1].Labels["team"] = "b"
	all := []string{
		"kube-system/kube-dns/dns", "kube-system/metrics-server",
		"ops/dns/dns", "ops/dns/dns-tcp",
		"shop/cart", "shop/web/grpc", "shop/web/http",
	}

	for _, tc := range []struct {
		name         string
		query        bootstrap.ClusterQuery
		exclude      []string
		explicit     []string
		want         []string
		wantServices int
	}{
		{name: "everything", want: all, wantServices: 7}, // ext and sig are Services without a servable port
		{name: "namespaces", query: bootstrap.ClusterQuery{Namespaces: []string{"ops", "shop"}},
			want: []string{"ops/dns/dns", "ops/dns/dns-tcp", "shop/cart", "shop/web/grpc", "shop/web/http"}, wantServices: 5},
		{name: "label selector", query: bootstrap.ClusterQuery{LabelSelector: "team=b"},
			want: []string{"kube-system/metrics-server"}, wantServices: 1},
		{name: "selector and namespace select nothing", query: bootstrap.ClusterQuery{Namespaces: []string{"shop"}, LabelSelector: "team=b"},
			want: nil, wantServices: 0},
		{name: "exclude named ports of a namespace", exclude: []string{"kube-system/*/*"},
			want: []string{"kube-system/metrics-server", "ops/dns/dns", "ops/dns/dns-tcp", "shop/cart", "shop/web/grpc", "shop/web/http"}, wantServices: 7},
		{name: "exclude a whole namespace", exclude: []string{"kube-system/*", "kube-system/*/*"},
			want: []string{"ops/dns/dns", "ops/dns/dns-tcp", "shop/cart", "shop/web/grpc", "shop/web/http"}, wantServices: 7},
		{name: "exclude by port, character class and exact name", exclude: []string{"*/*/dns*", "shop/[cd]art"},
			want: []string{"kube-system/metrics-server", "shop/web/grpc", "shop/web/http"}, wantServices: 7},
		{name: "union with --cluster, deduplicated and sorted",
			explicit: []string{"shop/web/http", "zoo/lion", "a/b/c"}, query: bootstrap.ClusterQuery{Namespaces: []string{"shop"}},
			want: []string{"a/b/c", "shop/cart", "shop/web/grpc", "shop/web/http", "zoo/lion"}, wantServices: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := make([]runtime.Object, len(world))
			for i, s := range world {
				objs[i] = s.DeepCopy()
			}
			found, services, err := bootstrap.ListClusters(t.Context(), fake.NewClientset(objs...), tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if services != tc.wantServices {
				t.Errorf("services = %d, want %d", services, tc.wantServices)
			}
			kept, err := bootstrap.ExcludeClusters(found, tc.exclude)
			if err != nil {
				t.Fatal(err)
			}
			var explicit []bootstrap.Cluster
			for _, s := range tc.explicit {
				c, err := bootstrap.ParseCluster(s)
				if err != nil {
					t.Fatal(err)
				}
				explicit = append(explicit, c)
			}
			if got := clusterNames(bootstrap.UnionClusters(explicit, kept)); !slices.Equal(got, tc.want) {
				t.Errorf("clusters\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestClustersFromSlicesMatchesTranslate: every name is one translate.Service
// publishes, whatever the order of the slices.
func TestClustersFromSlicesMatchesTranslate(t *testing.T) {
	a := epSlice("ns", "a", "svc", discoveryv1.AddressTypeIPv4, port{name: "b", num: 1}, port{name: "a", num: 2})
	b := epSlice("ns", "b", "svc", discoveryv1.AddressTypeIPv6, port{num: 3})
	var want []string
	for _, cla := range translate.Service("ns", "svc", []*discoveryv1.EndpointSlice{a, b}, translate.Options{}).CLAs {
		want = append(want, cla.GetClusterName())
	}
	for _, order := range [][]*discoveryv1.EndpointSlice{{a, b}, {b, a}, {b, nil, a, a}} {
		got, services := bootstrap.ClustersFromSlices(order)
		if !slices.Equal(clusterNames(got), want) || services != 1 {
			t.Errorf("ClustersFromSlices = %q, %d; want %q, 1", clusterNames(got), services, want)
		}
	}
}

func TestExcludeBadPattern(t *testing.T) {
	if _, err := bootstrap.ExcludeClusters(nil, []string{"ok/*", "bad/["}); err == nil || !strings.Contains(err.Error(), "bad/[") {
		t.Fatalf("ExcludeClusters with a bad pattern: %v", err)
	}
}

func TestListClustersForbidden(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC: denied"))
	})
	_, _, err := bootstrap.ListClusters(t.Context(), client, bootstrap.ClusterQuery{Namespaces: []string{"shop"}})
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), `namespace "shop"`) {
		t.Fatalf("err = %v", err)
	}
}

// runBootstrap runs `deltaeds bootstrap args...` (see runCommand).
//
//lint:ignore ST1008 returns what a CLI run ends with: its output, its error, then its exit code
func runBootstrap(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, err error, code int) {
	t.Helper()
	return runCommand(t, ctx, bootstrap.Command(), args...)
}

// edsClusters returns the names of the EDS clusters, in output order, and
// checks that each one's service_name is its name.
func edsClusters(t *testing.T, b *bootstrapv3.Bootstrap) []string {
	t.Helper()
	var names []string
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == bootstrap.ClusterName {
			continue
		}
		if got := c.GetEdsClusterConfig().GetServiceName(); got != c.GetName() {
			t.Errorf("cluster %q: service_name %q", c.GetName(), got)
		}
		names = append(names, c.GetName())
	}
	return names
}

func TestFromClusterFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad exclude pattern", []string{"--from-cluster", "--exclude", "shop/["}, `--exclude "shop/["`},
		{"exclude without from-cluster", []string{"--cluster", "a/b", "--exclude", "a/*"}, "--exclude needs --from-cluster"},
		{"namespace without from-cluster", []string{"--cluster", "a/b", "--namespace", "a"}, "--namespace needs --from-cluster"},
		{"kubeconfig without from-cluster", []string{"--cluster", "a/b", "--kubeconfig", "x"}, "--kubeconfig needs --from-cluster"},
		{"bad namespace", []string{"--from-cluster", "--namespace", "Shop"}, `--namespace "Shop"`},
		{"bad label selector", []string{"--from-cluster", "--label-selector", "a in (("}, "--label-selector"},
		{"neither cluster nor from-cluster", nil, "at least one --cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An unusable kubeconfig proves usage errors come before any API call.
			t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
			_, _, err, code := runBootstrap(t, t.Context(), tc.args...)
			if code != bootstrap.ExitUsage || !strings.Contains(fmt.Sprint(err), tc.want) {
				t.Fatalf("code %d, err %v; want %d and %q", code, err, bootstrap.ExitUsage, tc.want)
			}
		})
	}
}

// writeKubeconfig writes a kubeconfig for server with no credentials.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, server)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromClusterUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + l.Addr().String()
	l.Close() // nothing listens there any more
	kubeconfig := writeKubeconfig(t, server)
	out := filepath.Join(t.TempDir(), "bootstrap.yaml")
	_, _, err, code := runBootstrap(t, t.Context(), "--from-cluster", "--kubeconfig", kubeconfig, "--output", out)
	if code != 1 {
		t.Fatalf("code %d, err %v; want 1", code, err)
	}
	for _, want := range []string{"--from-cluster", server, "list EndpointSlices in all namespaces", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("an output file was written: %v", err)
	}
}

func TestFromClusterMissingKubeconfig(t *testing.T) {
	_, _, err, code := runBootstrap(t, t.Context(), "--from-cluster", "--kubeconfig", filepath.Join(t.TempDir(), "nope"))
	if code != 1 || !strings.Contains(fmt.Sprint(err), "kubeconfig") {
		t.Fatalf("code %d, err %v; want 1 and a kubeconfig error", code, err)
	}
}

// TestFromClusterAgainstAPIServer runs `deltaeds bootstrap --from-cluster`
// end to end against a real kube-apiserver.
func TestFromClusterAgainstAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	v4 := discoveryv1.AddressTypeIPv4
	for _, ns := range []string{"shop", "ops", "empty"} {
		if _, err := cp.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*discoveryv1.EndpointSlice{
		epSlice("shop", "web-a", "web", v4, port{name: "http", num: 80}, port{name: "grpc", num: 9090}),
		epSlice("shop", "web-b", "web", v4, port{name: "http", num: 80}),
		epSlice("shop", "cart-a", "cart", v4, port{num: 8080}),
		epSlice("shop", "stray", "", v4, port{name: "http", num: 80}),
		epSlice("ops", "dns-a", "dns", v4, port{name: "dns", num: 53, proto: corev1.ProtocolUDP}),
	} {
		if _, err := client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := cp.KubeconfigPath()

	t.Run("namespaces, exclude and --cluster, to a file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "bootstrap.json")
		_, stderr, err, code := runBootstrap(t, ctx, "--from-cluster", "--kubeconfig", kubeconfig,
			"--namespace", "shop", "--namespace", "ops", "--exclude", "*/*/grpc",
			"--cluster", "shop/web/http", "--cluster", "default/api/https",
			"--format", "json", "--output", out)
		if code != 0 {
			t.Fatalf("code %d: %v\n%s", code, err, stderr)
		}
		if stderr != "" {
			t.Errorf("stderr: %s", stderr)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"default/api/https", "ops/dns/dns", "shop/cart", "shop/web/http"}
		if got := edsClusters(t, decode(t, string(data))); !slices.Equal(got, want) {
			t.Errorf("clusters\n got %q\nwant %q", got, want)
		}
	})

	t.Run("all namespaces, stable output", func(t *testing.T) {
		args := []string{"--from-cluster", "--kubeconfig", kubeconfig, "--exclude", "default/*", "--exclude", "default/*/*"}
		first, stderr, err, code := runBootstrap(t, ctx, args...)
		if code != 0 {
			t.Fatalf("code %d: %v\n%s", code, err, stderr)
		}
		want := []string{"ops/dns/dns", "shop/cart", "shop/web/grpc", "shop/web/http"}
		if got := edsClusters(t, decode(t, first)); !slices.Equal(got, want) {
			t.Errorf("clusters\n got %q\nwant %q", got, want)
		}
		again, _, _, _ := runBootstrap(t, ctx, args...)
		if again != first {
			t.Errorf("two runs differ:\n%s\n---\n%s", first, again)
		}
	})

	t.Run("label selector", func(t *testing.T) {
		// Only the slices made here carry team=a (not the API server's own).
		out, stderr, err, code := runBootstrap(t, ctx, "--from-cluster", "--kubeconfig", kubeconfig, "--label-selector", "team=a")
		if code != 0 {
			t.Fatalf("code %d: %v\n%s", code, err, stderr)
		}
		want := []string{"ops/dns/dns", "shop/cart", "shop/web/grpc", "shop/web/http"}
		if got := edsClusters(t, decode(t, out)); !slices.Equal(got, want) {
			t.Errorf("clusters\n got %q\nwant %q", got, want)
		}
	})

	t.Run("no Services warns", func(t *testing.T) {
		out, stderr, err, code := runBootstrap(t, ctx, "--from-cluster", "--kubeconfig", kubeconfig, "--namespace", "empty")
		if code != 0 {
			t.Fatalf("code %d: %v\n%s", code, err, stderr)
		}
		if !strings.Contains(stderr, "warning: --from-cluster found no Services") {
			t.Errorf("stderr %q lacks the warning", stderr)
		}
		if got := edsClusters(t, decode(t, out)); len(got) != 0 {
			t.Errorf("clusters %q, want none", got)
		}
	})

	t.Run("no permission", func(t *testing.T) {
		// The admin impersonates a service account that RBAC grants nothing.
		cfg, err := clientcmd.LoadFromFile(kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range cfg.AuthInfos {
			u.Impersonate = "system:serviceaccount:shop:nobody"
		}
		denied := filepath.Join(t.TempDir(), "kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, denied); err != nil {
			t.Fatal(err)
		}
		_, _, err, code := runBootstrap(t, ctx, "--from-cluster", "--kubeconfig", denied, "--namespace", "shop")
		if code != 1 {
			t.Fatalf("code %d, err %v; want 1", code, err)
		}
		for _, want := range []string{"--from-cluster", cp.APIServerURL(), `namespace "shop"`, "permission denied", "forbidden"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }
