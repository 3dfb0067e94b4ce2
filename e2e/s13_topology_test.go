package e2e

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 13: topology-aware endpoints (issue 11). Each Envoy gets the CLA for where it runs.
//
// A Service with trafficDistribution: PreferSameZone has one pod on each of the six nodes (two
// per zone); the real EndpointSlice controller hints every ready endpoint for its own zone
// (k8s.io/endpointslice trafficdist, preferCloseHeuristic). A client in zone Z then routes to
// Z's pods at priority 0 and the other zones' at 1, and a terminating pod comes after both. A
// client that tells only its node name (node.metadata, as deploy's example Envoy does) gets the
// zone of its Node (--zone-from-node); one that tells nothing gets the plain CLA. With every pod
// of a zone gone, no endpoint is hinted for it and its clients get the plain CLA, the other
// zones at priority 0; pods back in the zone, back to their own. Two replicas publish equal
// variants: a client moved between them is resent nothing. A Service with
// internalTrafficPolicy: Local on two nodes gives a client on each node its node's pod only,
// and a client on a node without one an empty CLA. Without trafficDistribution, the controller
// drops the hints, and every client gets the plain CLA again.
func TestTopologyAwareEndpoints(t *testing.T) {
	const ns = "s13-topology"
	e := scenario(t, ns)
	ctx := t.Context()
	flags := []string{"--zone-from-node", "--internal-traffic-policy"}

	// One pod per node: Deploy places pods round-robin over the six nodes.
	nodes := e.cluster.Nodes()
	d, err := e.cluster.Deploy(ctx, harness.DeploymentSpec{Namespace: ns, Name: "web", Replicas: len(nodes), Ports: containerPorts})
	if err != nil {
		t.Fatal(err)
	}
	createService(t, e, ns, "web", d.Labels(), func(s *corev1.Service) {
		s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferSameZone)
	})
	name := translate.ClusterName(ns, "web", "http")
	waitZoneHints(t, e, ns, "web", d.IPs())
	canary := e.service(t, ns, "canary", 1)
	canaryName := translate.ClusterName(ns, "canary", "http")
	waitReadyEndpointsOf(t, e, ns, "canary", canary.IPs())

	a := e.deltaeds(t, harness.DeltaedsOptions{Name: "s13-a", ExtraArgs: flags})
	b := e.deltaeds(t, harness.DeltaedsOptions{Name: "s13-b", ExtraArgs: flags})
	proxy, err := harness.NewProxy(a.XDSAddress(), logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)

	// Clients 0-2 tell their zone (zone-a, -b, -c); client 3 tells only its node (zone-b-1), in
	// node.metadata under the key deltaeds reads by default; client 4 tells nothing.
	const nodeOnly, nowhere = 3, 4
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 5, Target: proxy.Addr(), NodePrefix: "s13", OnApply: rec.onApply,
		Configure: func(i int, cfg *envoysim.Config) {
			switch i {
			case nodeOnly:
				cfg.Locality = nil
				cfg.Metadata = nodeMetadata("zone-b-1")
			case nowhere:
				cfg.Locality = nil
			}
		}})
	zoneOf := func(i int) string {
		switch i {
		case nodeOnly:
			return "zone-b"
		case nowhere:
			return ""
		}
		return zones[i%len(zones)]
	}
	// expect says what client i routes to when the pods are pods: its zone's first, the rest
	// next, the terminating pods after; every pod at priority 0 when its zone has no pod or
	// it tells no zone.
	expect := func(pods, terminating []harness.Pod) func(i int) func(envoysim.State) bool {
		return func(i int) func(envoysim.State) bool {
			var local, rest []string
			for _, p := range pods {
				if p.Zone == zoneOf(i) {
					local = append(local, p.IP)
				} else {
					rest = append(rest, p.IP)
				}
			}
			tiers := [][]string{local, rest, ipsOf(terminating)}
			if len(local) == 0 {
				tiers = [][]string{rest, ipsOf(terminating)}
			}
			return holdsTiers(name, tiers...)
		}
	}
	waitEach := func(what string, f *envoyfleet.Fleet, pred func(i int) func(envoysim.State) bool) {
		t.Helper()
		if err := f.WaitEach(waitCtx(t), pred); err != nil {
			t.Fatalf("waiting for %s: %v\n%s", what, err, describeFleet(f))
		}
	}
	f.Subscribe(name)
	waitEach("each client's zone first", f, expect(d.Pods(), nil))
	t.Logf("zones: %s", describeFleet(f))

	t.Run("a replica switch resends nothing", func(t *testing.T) {
		// A watcher on replica B in every zone: B publishes the same variants.
		watchB := e.fleet(t, envoyfleet.Options{Size: 3, Target: b.XDSAddress(), NodePrefix: "s13-watch-b"})
		watchB.Subscribe(name)
		waitEach("replica B's variants", watchB, expect(d.Pods(), nil))
		for i := range 3 {
			ha, _ := f.Clients[i].Held(name)
			hb, _ := watchB.Clients[i].Held(name)
			if ha.Version != hb.Version {
				t.Errorf("zone %s: replica A serves version %s, replica B %s", zones[i], ha.Version, hb.Version)
			}
		}
		mark := rec.mark()
		proxy.SetBackend(b.XDSAddress())
		// Once every client holds the canary, every resend the reconnect would cause has
		// arrived (see scenario 5).
		f.Subscribe(canaryName)
		waitAll(t, "the canary through replica B", f, func(s envoysim.State) bool { _, ok := s.Held(canaryName); return ok })
		for i := range f.Clients {
			var got []string
			for _, ev := range rec.since(mark, i, "") {
				got = append(got, ev.name)
			}
			if !slices.Equal(got, []string{canaryName}) {
				t.Errorf("client %d received %v after moving to replica B, want only the canary", i, got)
			}
		}
		waitEach("each client's zone first, through replica B", f, expect(d.Pods(), nil))
	})

	t.Run("a terminating pod comes after the other zones", func(t *testing.T) {
		pods := d.Pods()
		var draining harness.Pod
		var rest []harness.Pod
		for _, p := range pods {
			if p.Zone == "zone-b" && draining.Name == "" {
				draining = p
				continue
			}
			rest = append(rest, p)
		}
		if err := d.Drain(ctx, draining); err != nil {
			t.Fatal(err)
		}
		waitEach("zone-b's draining pod last", f, expect(rest, []harness.Pod{draining}))
		if err := d.Remove(ctx, draining); err != nil {
			t.Fatal(err)
		}
		waitEach("zone-b's drained pod gone", f, expect(rest, nil))
	})

	t.Run("a zone without pods fails over to the others and back", func(t *testing.T) {
		for _, p := range d.Pods() {
			if p.Zone == "zone-a" {
				if err := d.Remove(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitZoneHints(t, e, ns, "web", d.IPs())
		waitEach("zone-a's clients on the other zones", f, expect(d.Pods(), nil))
		added, err := d.Scale(ctx, 2) // the round-robin puts both on zone-a's nodes
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range added {
			if p.Zone != "zone-a" {
				t.Fatalf("pod %s placed in %s, the scenario expects zone-a", p.Name, p.Zone)
			}
		}
		waitZoneHints(t, e, ns, "web", d.IPs())
		waitEach("zone-a's clients back on their zone", f, expect(d.Pods(), nil))
	})

	t.Run("trafficDistribution removed: every client the plain CLA", func(t *testing.T) {
		svc, err := e.cp.Client().CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.TrafficDistribution = nil
		if _, err := e.cp.Client().CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "every ready pod at priority 0 for every client", f, holds(name, d.IPs(), nil))
	})

	t.Run("internalTrafficPolicy Local on two nodes", func(t *testing.T) {
		// A second Deployment's round-robin starts over: its two pods are on zone-a-0 and
		// zone-a-1.
		local, err := e.cluster.Deploy(ctx, harness.DeploymentSpec{Namespace: ns, Name: "local", Replicas: 2, Ports: containerPorts})
		if err != nil {
			t.Fatal(err)
		}
		createService(t, e, ns, "local", local.Labels(), func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		})
		localName := translate.ClusterName(ns, "local", "http")
		waitReadyEndpointsOf(t, e, ns, "local", local.IPs())
		onNode := map[string]string{}
		for _, p := range local.Pods() {
			onNode[p.Node] = p.IP
		}
		// Clients 0 and 1 on the two nodes with a pod, 2 on a node without, 3 telling no node.
		at := []string{"zone-a-0", "zone-a-1", "zone-c-0", ""}
		if onNode[at[0]] == "" || onNode[at[1]] == "" {
			t.Fatalf("pods on %v, the scenario expects zone-a-0 and zone-a-1", onNode)
		}
		lf := e.fleet(t, envoyfleet.Options{Size: len(at), Target: a.XDSAddress(), NodePrefix: "s13-local",
			Configure: func(i int, cfg *envoysim.Config) {
				if at[i] != "" {
					cfg.Metadata = nodeMetadata(at[i])
				}
			}})
		lf.Subscribe(localName)
		waitEach("each client its node's pod only", lf, func(i int) func(envoysim.State) bool {
			switch {
			case at[i] == "":
				return holds(localName, local.IPs(), nil)
			case onNode[at[i]] == "":
				return routesNothing(localName)
			}
			return holds(localName, []string{onNode[at[i]]}, nil)
		})
		t.Logf("internalTrafficPolicy Local: %s", describeFleet(lf))
	})
}

// nodeMetadata is node.metadata telling the Kubernetes node name under the key deltaeds reads
// by default, as `deltaeds bootstrap --node-name` writes it.
func nodeMetadata(node string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{delta.DefaultNodeNameMetadataKey: structpb.NewStringValue(node)}}
}

// createService creates a ClusterIP Service selecting the pods labelled selector with the http
// port, edited by edit first.
func createService(t *testing.T, e *environment, ns, name string, selector map[string]string, edit func(*corev1.Service)) {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: httpPort.Name, Port: httpPort.Port, TargetPort: intstr.FromInt32(httpPort.TargetPort), Protocol: corev1.ProtocolTCP,
		}}},
	}
	edit(s)
	if _, err := e.cp.Client().CoreV1().Services(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitZoneHints waits until the Service's slices list exactly ips as ready endpoints, each
// hinted for its own zone: the EndpointSlice controller has caught up.
func waitZoneHints(t *testing.T, e *environment, ns, svc string, ips []string) {
	t.Helper()
	want := harness.SortIPs(append([]string(nil), ips...))
	err := harness.Eventually(waitCtx(t), func() error {
		l, err := e.cp.Client().DiscoveryV1().EndpointSlices(ns).List(t.Context(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return err
		}
		var got []string
		for _, s := range l.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				if ep.Zone == nil || ep.Hints == nil || len(ep.Hints.ForZones) != 1 || ep.Hints.ForZones[0].Name != *ep.Zone {
					return fmt.Errorf("endpoint %v has hints %+v", ep.Addresses, ep.Hints)
				}
				got = append(got, ep.Addresses[0])
			}
		}
		if !harness.SameIPs(harness.SortIPs(got), want) {
			return fmt.Errorf("ready endpoints %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the EndpointSlice controller's zone hints (%s/%s): %v", ns, svc, err)
	}
}

// holdsTiers is a predicate: the client routes name to exactly tiers[p] usable at priority p,
// and nothing else.
func holdsTiers(name string, tiers ...[]string) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		r, ok := s.Route(name)
		if !ok {
			return false
		}
		n := 0
		for p, ips := range tiers {
			n += len(ips)
			if !harness.SameIPs(harness.IPsAt(r.CLA, uint32(p)), harness.SortIPs(append([]string(nil), ips...))) {
				return false
			}
		}
		return len(harness.Endpoints(r.CLA)) == n
	}
}
