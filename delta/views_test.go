package delta

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deltaeds/deltaeds/xds"
)

// viewEcho is a Variants whose variant for a view names the view: its one
// endpoint's address is "ZONE|NODE". Every non-zero view has its own key.
type viewEcho struct{ name string }

func (e viewEcho) Key(v xds.View) string {
	if v.IsZero() {
		return ""
	}
	return v.Zone + "|" + v.Node
}

func (e viewEcho) Build(v xds.View) proto.Message {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: e.name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: v.Zone + "|" + v.Node, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1},
					}}},
				}},
			}},
		}},
	}
}

// servedView returns the view a response's CLA a was built for: "ZONE|NODE",
// or "plain" for the plain CLA.
func servedView(t *testing.T, resp *discoveryv3.DeltaDiscoveryResponse) string {
	t.Helper()
	if len(resp.Resources) != 1 {
		t.Fatalf("got %s, want a alone", summary(resp))
	}
	addr := decodeCLA(t, resp.Resources[0]).GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
	if !strings.Contains(addr, "|") {
		return "plain"
	}
	return addr
}

// node builds a first request's node: a zone in its locality (when not
// empty) and metadata fields.
func node(zone string, metadata map[string]any) *corev3.Node {
	n := &corev3.Node{Id: "envoy-1", Cluster: "test"}
	if zone != "" {
		n.Locality = &corev3.Locality{Region: "r", Zone: zone}
	}
	if metadata != nil {
		md, err := structpb.NewStruct(metadata)
		if err != nil {
			panic(err)
		}
		n.Metadata = md
	}
	return n
}

// TestStreamView: a stream's view comes from its first request's node (zone
// from the locality, node name from the configured metadata field, zone from
// ZoneOfNode when only the node name is told), is shown by Streams, picks
// the variant the stream is served, and is fixed for the stream's life.
func TestStreamView(t *testing.T) {
	const key = DefaultNodeNameMetadataKey
	zoneOf := func(n string) string { return map[string]string{"node-a": "zone-a"}[n] }
	long := strings.Repeat("x", maxViewPart+1)
	cases := []struct {
		name string
		cfg  Config
		node *corev3.Node
		want xds.View
		// lookups is how often ZoneOfNode must be called.
		lookups int
	}{
		{"no place told", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node("", nil), xds.View{}, 0},
		{"zone from the locality", Config{NodeNameMetadataKey: key}, node("zone-b", nil), xds.View{Zone: "zone-b"}, 0},
		{"node name from the metadata", Config{NodeNameMetadataKey: key}, node("", map[string]any{key: "node-a"}), xds.View{Node: "node-a"}, 0},
		{"both", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node("zone-b", map[string]any{key: "node-a"}), xds.View{Zone: "zone-b", Node: "node-a"}, 0},
		{"zone from the node", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node("", map[string]any{key: "node-a"}), xds.View{Zone: "zone-a", Node: "node-a"}, 1},
		{"zone of an unknown node", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node("", map[string]any{key: "node-z"}), xds.View{Node: "node-z"}, 1},
		{"metadata not read without a key", Config{ZoneOfNode: zoneOf}, node("", map[string]any{key: "node-a"}), xds.View{}, 0},
		{"another metadata key", Config{NodeNameMetadataKey: "other"}, node("", map[string]any{key: "node-a", "other": "node-o"}), xds.View{Node: "node-o"}, 0},
		{"a node name that is not a string", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node("zone-b", map[string]any{key: 7.0}), xds.View{Zone: "zone-b"}, 0},
		{"too long to be a name", Config{NodeNameMetadataKey: key, ZoneOfNode: zoneOf}, node(long, map[string]any{key: long}), xds.View{}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var lookups atomic.Int32
			if zoneOf := tc.cfg.ZoneOfNode; zoneOf != nil {
				tc.cfg.ZoneOfNode = func(n string) string { lookups.Add(1); return zoneOf(n) }
			}
			f := newFixture(t, tc.cfg)
			if _, err := f.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: "a", Message: cla("a", 1), Variants: viewEcho{"a"}}}); err != nil {
				t.Fatal(err)
			}
			f.store.MarkSynced()
			rs := f.open()
			rs.send(&req{Node: tc.node, ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			want := "plain"
			if !tc.want.IsZero() {
				want = tc.want.Zone + "|" + tc.want.Node
			}
			if got := servedView(t, resp); got != want {
				t.Errorf("served the variant for %q, want %q", got, want)
			}
			rs.ack(resp)
			if got := f.server.Streams()[0].View; got != tc.want {
				t.Errorf("Streams shows view %+v, want %+v", got, tc.want)
			}

			// A later request's node changes nothing, as for the node id.
			rs.send(&req{Node: node("zone-later", map[string]any{key: "node-later"}), ResourceNamesSubscribe: []string{"b"}})
			rs.ack(rs.next())
			if got := f.server.Streams()[0].View; got != tc.want {
				t.Errorf("after a request with another node, Streams shows view %+v, want %+v", got, tc.want)
			}
			if got := int(lookups.Load()); got != tc.lookups {
				t.Errorf("ZoneOfNode called %d times, want %d", got, tc.lookups)
			}
		})
	}
}

// TestViewReplicaSwitchResendsNothing: a client at a view that switches to
// another replica holding equal content, declaring the variant's version it
// holds, is resent nothing; the variant of a changed name is sent.
func TestViewReplicaSwitchResendsNothing(t *testing.T) {
	cfg := Config{NodeNameMetadataKey: DefaultNodeNameMetadataKey}
	n := node("zone-a", map[string]any{DefaultNodeNameMetadataKey: "node-1"})
	replica := func(port uint32) *fixture {
		f := newFixture(t, cfg)
		if _, err := f.store.Apply(EndpointType, []xds.ResourceUpdate{
			{Name: "a", Message: cla("a", 1), Variants: viewEcho{"a"}},
			{Name: "b", Message: cla("b", port), Variants: viewEcho{"b"}},
		}); err != nil {
			t.Fatal(err)
		}
		f.store.MarkSynced()
		return f
	}
	first := replica(1)
	rs := first.open()
	rs.send(&req{Node: n, ResourceNamesSubscribe: []string{"a", "b"}})
	resp := rs.next()
	held := map[string]string{}
	for _, r := range resp.Resources {
		held[r.Name] = r.Version
		if r.Version == first.version(r.Name) {
			t.Errorf("%s served its plain version to a client at a view", r.Name)
		}
	}
	rs.ack(resp)

	second := replica(1)
	rs2 := second.open()
	rs2.send(&req{Node: n, ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: held})
	rs2.quiet()

	// b's plain content changes; its variant names the view only, so it
	// does not: nothing is sent.
	third := replica(2)
	rs3 := third.open()
	rs3.send(&req{Node: n, ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: held})
	rs3.quiet()
	// A client at no view holding the first replica's variant versions is
	// corrected to the plain CLAs.
	rs4 := third.open()
	rs4.first(&req{ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: held})
	if got := names(rs4.next()); len(got) != 2 {
		t.Errorf("a client at no view holding variants got %v, want a and b", got)
	}
}

// TestZoneOfNodeWaitsForTheFirstSync: ZoneOfNode reads a cache that is
// complete only at the first full sync; a client that connects before then,
// telling only its node, still gets its node's zone for its stream's life.
func TestZoneOfNodeWaitsForTheFirstSync(t *testing.T) {
	var listed atomic.Bool // the Node cache, empty until it has listed
	cfg := Config{NodeNameMetadataKey: DefaultNodeNameMetadataKey, ZoneOfNode: func(n string) string {
		if !listed.Load() {
			return ""
		}
		return map[string]string{"node-a": "zone-a"}[n]
	}}
	f := newFixture(t, cfg)
	if _, err := f.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: "a", Message: cla("a", 1), Variants: viewEcho{"a"}}}); err != nil {
		t.Fatal(err)
	}
	rs := f.open()
	rs.send(&req{Node: node("", map[string]any{DefaultNodeNameMetadataKey: "node-a"}), ResourceNamesSubscribe: []string{"a"}})
	// The stream shows its node id as soon as it handles its first request.
	if err := wait.PollUntilContextTimeout(t.Context(), time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		ss := f.server.Streams()
		return len(ss) == 1 && ss[0].NodeID == "envoy-1", nil
	}); err != nil {
		t.Fatalf("the stream never handled its first request: %v", err)
	}
	listed.Store(true) // deltaeds syncs its Node informer, then opens the gate
	f.store.MarkSynced()
	if got := servedView(t, rs.next()); got != "zone-a|node-a" {
		t.Errorf("served the variant for %q, want the one for zone-a|node-a", got)
	}
}
