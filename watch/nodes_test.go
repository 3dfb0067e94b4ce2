package watch

import (
	"maps"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
)

// localities returns "region/zone" per endpoint address of a CLA.
func localities(c *endpointv3.ClusterLoadAssignment) map[string]string {
	out := map[string]string{}
	for _, g := range c.GetEndpoints() {
		for _, lb := range g.GetLbEndpoints() {
			out[lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = g.GetLocality().GetRegion() + "/" + g.GetLocality().GetZone()
		}
	}
	return out
}

// TestNodeLocalityAgainstRealAPIServer: under NodeLocality each endpoint's
// locality carries its Node's region, from the first list on, and follows
// the Node's region label as it is set, changed and the Node deleted.
func TestNodeLocalityAgainstRealAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	nodes := client.CoreV1().Nodes()
	for name, region := range map[string]string{"n1": "r1", "n2": "r2", "n3": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ZoneLabel: "z-" + name}}}
		if region != "" {
			n.Labels[RegionLabel] = region
		}
		if _, err := nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s := slice("shop", "cart-1", "cart", 8080, "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")
	for i, n := range []string{"n1", "n2", "n3", ""} {
		if n != "" {
			s.Endpoints[i].NodeName = ptr(n)
			s.Endpoints[i].Zone = ptr("z-" + n)
		}
	}
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, store := started(t, client, Config{NodeLocality: true, DeletedGracePeriod: time.Hour})
	eventually(t, "sync", store.Synced)

	want := map[string]string{"10.1.0.1": "r1/z-n1", "10.1.0.2": "r2/z-n2", "10.1.0.3": "/z-n3", "10.1.0.4": "/"}
	if got := localities(storedCLA(t, store, "shop/cart/http")); !maps.Equal(got, want) {
		t.Fatalf("at first sync: %v, want %v", got, want)
	}

	setRegion := func(name, region string) {
		t.Helper()
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels[RegionLabel] = region
		if _, err := nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setRegion("n2", "r9")
	setRegion("n3", "r3")
	want["10.1.0.2"], want["10.1.0.3"] = "r9/z-n2", "r3/z-n3"
	eventually(t, "relabelled regions", func() bool { return maps.Equal(localities(storedCLA(t, store, "shop/cart/http")), want) })

	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want["10.1.0.1"] = "/z-n1"
	eventually(t, "a deleted node's region gone", func() bool { return maps.Equal(localities(storedCLA(t, store, "shop/cart/http")), want) })
	// n2 and n3 relabelled, n1 deleted; creations before the sync count not.
	if got := testutil.ToFloat64(w.metrics.NodeRegionChanges); got != 3 {
		t.Fatalf("deltaeds_node_region_changes_total = %v, want 3", got)
	}
}
