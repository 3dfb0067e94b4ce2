package translate_test

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/deltaeds/deltaeds/translate"
)

func hints(zones []string, nodes ...string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.Hints = &discoveryv1.EndpointHints{}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
		for _, n := range nodes {
			e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
		}
	}
}

func zones(z ...string) []string { return z }

func TestTopology(t *testing.T) {
	http80 := ports(tcp("http", 80))
	// Three zones; every ready endpoint hinted for its own zone, as the
	// EndpointSlice controller does for PreferSameZone.
	zoned := []*discoveryv1.EndpointSlice{v4("a", http80,
		ep("10.0.0.1", zone("a"), node("n1"), hints(zones("a"))),
		ep("10.0.0.2", zone("a"), node("n2"), hints(zones("a"))),
		ep("10.0.0.3", zone("b"), node("n3"), hints(zones("b"))),
		ep("10.0.0.4", zone("c"), node("n4"), hints(zones("b"))), // the controller balances zones
		ep("10.0.0.5", zone("a"), node("n1"), terminating),       // no hints: not ready
	)}
	// PreferSameNode: node hints and zone hints on every ready endpoint.
	noded := []*discoveryv1.EndpointSlice{v4("a", http80,
		ep("10.0.0.1", zone("a"), node("n1"), hints(zones("a"), "n1")),
		ep("10.0.0.2", zone("a"), node("n2"), hints(zones("a"), "n2")),
		ep("10.0.0.3", zone("b"), node("n3"), hints(zones("b"), "n3")),
		ep("10.0.0.4", zone("a"), node("n1"), terminating),
	)}
	local := []*discoveryv1.EndpointSlice{v4("a", http80,
		ep("10.0.0.1", zone("a"), node("n1")),
		ep("10.0.0.2", zone("a"), node("n1"), terminating),
		ep("10.0.0.3", zone("b"), node("n2")),
	)}

	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		opts   translate.Options
		view   translate.View
		key    string
		want   []string // nil: the plain CLA
	}{
		{name: "zone hints: the client's zone first, other ready next, terminating last",
			slices: zoned, view: translate.View{Zone: "a", Node: "n1"}, key: "zone:a",
			want: []string{
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p0 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p1 zone=b 10.0.0.3:80/TCP HEALTHY node=n3",
				"p1 zone=c 10.0.0.4:80/TCP HEALTHY node=n4",
				"p2 zone=a 10.0.0.5:80/TCP HEALTHY node=n1",
			}},
		{name: "zone hints follow the hint, not the endpoint's zone",
			slices: zoned, view: translate.View{Zone: "b"}, key: "zone:b",
			want: []string{
				"p0 zone=b 10.0.0.3:80/TCP HEALTHY node=n3",
				"p0 zone=c 10.0.0.4:80/TCP HEALTHY node=n4",
				"p1 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p2 zone=a 10.0.0.5:80/TCP HEALTHY node=n1",
			}},
		{name: "no hint for the client's zone: the plain CLA (kube-proxy ignores the hints)",
			slices: zoned, view: translate.View{Zone: "c"}},
		{name: "a client that tells no place: the plain CLA",
			slices: zoned, view: translate.View{}},
		{name: "incomplete zone hints (one ready endpoint without): no topology",
			slices: []*discoveryv1.EndpointSlice{v4("a", http80,
				ep("10.0.0.1", zone("a"), hints(zones("a"))),
				ep("10.0.0.2", zone("b")),
			)},
			view: translate.View{Zone: "a"}},
		{name: "node hints: the client's node, then its zone, then the rest, then terminating",
			slices: noded, view: translate.View{Zone: "a", Node: "n1"}, key: "node:n1\x00zone:a",
			want: []string{
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p2 zone=b 10.0.0.3:80/TCP HEALTHY node=n3",
				"p3 zone=a 10.0.0.4:80/TCP HEALTHY node=n1",
			}},
		{name: "node hints without a zone: the node, then the rest",
			slices: noded, view: translate.View{Node: "n3"}, key: "node:n3",
			want: []string{
				"p0 zone=b 10.0.0.3:80/TCP HEALTHY node=n3",
				"p1 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p2 zone=a 10.0.0.4:80/TCP HEALTHY node=n1",
			}},
		{name: "node hints, no hint for the client's node: zone rules only",
			slices: noded, view: translate.View{Zone: "b", Node: "n9"}, key: "zone:b",
			want: []string{
				"p0 zone=b 10.0.0.3:80/TCP HEALTHY node=n3",
				"p1 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p2 zone=a 10.0.0.4:80/TCP HEALTHY node=n1",
			}},
		{name: "internalTrafficPolicy Local: the node's endpoints, terminating fallback on the node",
			slices: local, opts: translate.Options{InternalTrafficLocal: true}, view: translate.View{Zone: "a", Node: "n1"}, key: "local:n1",
			want: []string{
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.2:80/TCP HEALTHY node=n1",
			}},
		{name: "internalTrafficPolicy Local on a node without endpoints: an empty CLA",
			slices: local, opts: translate.Options{InternalTrafficLocal: true}, view: translate.View{Node: "n9"}, key: "local:n9",
			want: []string{}},
		{name: "internalTrafficPolicy Local, a client that tells no node: the plain CLA",
			slices: local, opts: translate.Options{InternalTrafficLocal: true}, view: translate.View{Zone: "a"}},
		{name: "internalTrafficPolicy Local ignores hints",
			slices: zoned, opts: translate.Options{InternalTrafficLocal: true}, view: translate.View{Zone: "b", Node: "n1"}, key: "local:n1",
			want: []string{
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p1 zone=a 10.0.0.5:80/TCP HEALTHY node=n1",
			}},
		{name: "unready endpoints under IncludeUnready come after the terminating fallback",
			slices: []*discoveryv1.EndpointSlice{v4("a", http80,
				ep("10.0.0.1", zone("a"), hints(zones("a"))),
				ep("10.0.0.2", zone("b"), hints(zones("b"))),
				ep("10.0.0.3", zone("a"), starting),
			)},
			opts: translate.Options{IncludeUnready: true}, view: translate.View{Zone: "a"}, key: "zone:a",
			want: []string{
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY",
				"p1 zone=b 10.0.0.2:80/TCP HEALTHY",
				"p2 zone= (empty)",
				"p3 zone=a 10.0.0.3:80/TCP UNHEALTHY",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translate.Service(testNS, testSvc, tt.slices, tt.opts)
			checkResult(t, testNS, testSvc, res)
			topo := res.Topologies["ns/svc/http"]
			if got := topo.Key(tt.view); got != tt.key {
				t.Fatalf("Key(%+v) = %q, want %q", tt.view, got, tt.key)
			}
			cla := topo.CLA(tt.view)
			if tt.want == nil {
				if cla != nil {
					t.Fatalf("CLA(%+v) = %v, want the plain CLA (nil)", tt.view, cla)
				}
				return
			}
			if cla == nil {
				t.Fatalf("CLA(%+v) = nil, want a variant", tt.view)
			}
			variant := translate.Result{CLAs: res.CLAs[:0:0]}
			variant.CLAs = append(variant.CLAs, cla)
			checkResult(t, testNS, testSvc, variant)
			got := summarize(cla)
			if got == nil {
				got = []string{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("CLA(%+v):\n got %q\nwant %q", tt.view, got, tt.want)
			}
		})
	}
}

// TestTopologyNoHintsNoCost: a Service without hints or policy has no
// Topology, so its clients all share the plain CLA.
func TestTopologyNoHintsNoCost(t *testing.T) {
	res := translate.Service(testNS, testSvc, []*discoveryv1.EndpointSlice{
		v4("a", ports(tcp("http", 80)), ep("10.0.0.1", zone("a"), node("n1"))),
	}, translate.Options{})
	if len(res.Topologies) != 0 {
		t.Fatalf("Topologies = %v, want none", res.Topologies)
	}
	var none *translate.Topology
	if none.Key(translate.View{Zone: "a", Node: "n1"}) != "" || none.CLA(translate.View{Zone: "a"}) != nil {
		t.Fatal("a nil Topology must key every view to the plain CLA")
	}
}

// TestTopologyKeysShareVariants: views with equal keys get byte-identical
// variants, whatever the order of the input; views with different keys do
// not share one.
func TestTopologyKeysShareVariants(t *testing.T) {
	in := []*discoveryv1.EndpointSlice{
		v4("a", ports(tcp("http", 80)),
			ep("10.0.0.1", zone("a"), node("n1"), hints(zones("a", "b"))),
			ep("10.0.0.2", zone("b"), node("n2"), hints(zones("b"))),
		),
		v4("b", ports(tcp("http", 80)), ep("10.0.0.3", zone("a"), node("n3"), hints(zones("a")))),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	build := func(v translate.View) (string, []byte) {
		res := translate.Service(testNS, testSvc, shuffled(rng, in), translate.Options{})
		topo := res.Topologies["ns/svc/http"]
		b := marshalAll(t, translate.Result{CLAs: append(res.CLAs[:0:0], topo.CLA(v))})
		return topo.Key(v), b[0]
	}
	k1, b1 := build(translate.View{Zone: "a", Node: "n1"})
	k2, b2 := build(translate.View{Zone: "a", Node: "n7"})
	k3, b3 := build(translate.View{Zone: "b", Node: "n1"})
	if k1 != k2 || !bytes.Equal(b1, b2) {
		t.Fatalf("two clients of zone a: keys %q %q, equal bytes %v", k1, k2, bytes.Equal(b1, b2))
	}
	if k1 == k3 || bytes.Equal(b1, b3) {
		t.Fatalf("zones a and b share key %q or bytes", k1)
	}
}
