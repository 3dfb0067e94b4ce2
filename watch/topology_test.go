package watch

import (
	"maps"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/xds"
)

// TestTopologyInputsAgainstRealAPIServer: under NodeZones a Node's zone is
// read from its label (and forgotten with the Node); under
// InternalTrafficPolicy a Service's internalTrafficPolicy is followed as it
// is created, edited and deleted, each change counted once; the store
// serves each view the variant its zone hints and policy give.
func TestTopologyInputsAgainstRealAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	nodes := client.CoreV1().Nodes()
	for name, zone := range map[string]string{"n1": "z1", "n2": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if zone != "" {
			n.Labels[ZoneLabel] = zone
		}
		if _, err := nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	services := client.CoreV1().Services("shop")
	service := func(name string, policy corev1.ServiceInternalTrafficPolicy) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{
				Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
				InternalTrafficPolicy: &policy,
			},
		}
	}
	if _, err := services.Create(ctx, service("local", corev1.ServiceInternalTrafficPolicyLocal), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := services.Create(ctx, service("cluster", corev1.ServiceInternalTrafficPolicyCluster), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// "local" has an endpoint on n1 and one on n2; "cluster"'s are hinted
	// for zones z1 and z2.
	local := slice("shop", "local-1", "local", 8080, "10.1.0.1", "10.1.0.2")
	local.Endpoints[0].NodeName, local.Endpoints[1].NodeName = ptr("n1"), ptr("n2")
	hinted := slice("shop", "cluster-1", "cluster", 8080, "10.2.0.1", "10.2.0.2")
	hinted.Endpoints[0].NodeName, hinted.Endpoints[1].NodeName = ptr("n1"), ptr("n2")
	hinted.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}}
	hinted.Endpoints[1].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z2"}}}
	for _, s := range []*discoveryv1.EndpointSlice{local, hinted} {
		if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	w, store := started(t, client, Config{NodeZones: true, InternalTrafficPolicy: true, DeletedGracePeriod: time.Hour})
	eventually(t, "sync", store.Synced)
	served := func(name string, v xds.View) map[string]uint32 { return servedAt(t, store, name, v) }
	both := map[string]uint32{"10.1.0.1": 0, "10.1.0.2": 0}
	if got := served("shop/local/http", xds.View{Node: "n1"}); !maps.Equal(got, map[string]uint32{"10.1.0.1": 0}) {
		t.Fatalf("Local Service at node n1: %v, want n1's endpoint only", got)
	}
	if got := served("shop/local/http", xds.View{Zone: "z1"}); !maps.Equal(got, both) {
		t.Fatalf("Local Service to a client telling no node: %v, want the plain CLA", got)
	}
	if got := served("shop/cluster/http", xds.View{Zone: "z2"}); !maps.Equal(got, map[string]uint32{"10.2.0.2": 0, "10.2.0.1": 1}) {
		t.Fatalf("hinted Service at zone z2: %v, want z2's endpoint first", got)
	}
	if w.NodeZone("n1") != "z1" || w.NodeZone("n2") != "" || w.NodeZone("n9") != "" || w.NodeZone("") != "" {
		t.Fatalf("zones n1=%q n2=%q n9=%q", w.NodeZone("n1"), w.NodeZone("n2"), w.NodeZone("n9"))
	}
	if !w.serviceLocal("shop", "shop/local") || w.serviceLocal("shop", "shop/cluster") || w.serviceLocal("shop", "shop/none") {
		t.Fatal("policies at first sync are wrong")
	}
	// The Service created Local before the start counts once.
	changes := func() float64 { return testutil.ToFloat64(w.metrics.ServicePolicyChanges) }
	if got := changes(); got != 1 {
		t.Fatalf("deltaeds_service_policy_changes_total = %v at first sync, want 1", got)
	}

	n2, err := nodes.Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2.Labels = map[string]string{ZoneLabel: "z2"}
	if _, err := nodes.Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n2's zone", func() bool { return w.NodeZone("n2") == "z2" })
	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n1 forgotten", func() bool { return w.NodeZone("n1") == "" })

	c, err := services.Get(ctx, "cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	if _, err := services.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cluster turned Local", func() bool {
		return maps.Equal(served("shop/cluster/http", xds.View{Zone: "z2", Node: "n1"}), map[string]uint32{"10.2.0.1": 0})
	})
	// An edit that leaves the policy alone is no change.
	c, err = services.Get(ctx, "cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Labels = map[string]string{"edited": "yes"}
	if _, err := services.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := services.Delete(ctx, "local", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "local deleted: served as Cluster", func() bool { return maps.Equal(served("shop/local/http", xds.View{Node: "n1"}), both) })
	if got := changes(); got != 3 {
		t.Fatalf("deltaeds_service_policy_changes_total = %v, want 3 (created Local, turned Local, deleted)", got)
	}
}

// servedAt returns what a client at v is served of name now, as address ->
// priority, through a subscription of its own.
func servedAt(t *testing.T, store *xds.Store, name string, v xds.View) map[string]uint32 {
	t.Helper()
	sub := store.SubscribeView(xds.EndpointType, v, make(chan struct{}, 1), 0)
	defer sub.Close()
	if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{name}}); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, r := range sub.Next(0).Resources {
		c := &endpointv3.ClusterLoadAssignment{}
		if err := proto.Unmarshal(r.Wire.GetResource().GetValue(), c); err != nil {
			t.Fatal(err)
		}
		for _, g := range c.GetEndpoints() {
			for _, lb := range g.GetLbEndpoints() {
				out[lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = g.GetPriority()
			}
		}
	}
	return out
}
