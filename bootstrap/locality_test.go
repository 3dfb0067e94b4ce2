package bootstrap_test

import (
	"math"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/translate"
)

// zonedService is one Service whose endpoints run on nodes n1, n2 (zone a,
// region r1) and n3 (zone b, region r2): three in zone a, one in zone b.
func zonedService(opts translate.Options) *endpointv3.ClusterLoadAssignment {
	zoneOf := map[string]string{"n1": "a", "n2": "a", "n3": "b"}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{translate.ServiceNameLabel: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](80), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for i, n := range []string{"n1", "n2", "n1", "n3"} {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{"10.0.0." + string(rune('1'+i))},
			NodeName:  ptr(n),
			Zone:      ptr(zoneOf[n]),
		})
	}
	res := translate.Service("shop", "web", []*discoveryv1.EndpointSlice{s}, opts)
	return res.CLAs[0]
}

var regions = translate.Options{NodeRegion: func(n string) string { return map[string]string{"n1": "r1", "n2": "r1", "n3": "r2"}[n] }}

// TestBootstrapLocalityMatchesCLAs checks, with envoysim's model of Envoy's
// locality matching, that a node locality deltaeds bootstrap writes finds
// its local hosts in the CLAs deltaeds serves exactly when the two agree:
// region set in the bootstrap iff deltaeds serves regions (--node-locality).
func TestBootstrapLocalityMatchesCLAs(t *testing.T) {
	tests := []struct {
		name         string
		locality     bootstrap.Locality
		nodeLocality bool // deltaeds serve --node-locality
		wantLocal    int  // local hosts Envoy finds at priority 0
		wantFinding  bool // deltaeds check --node-locality=<nodeLocality> reports it
	}{
		{"zone only, CLAs without regions", bootstrap.Locality{Zone: "a"}, false, 3, false},
		{"region and zone, CLAs with regions", bootstrap.Locality{Region: "r1", Zone: "a"}, true, 3, false},
		{"region in the bootstrap only: never local", bootstrap.Locality{Region: "r1", Zone: "a"}, false, 0, true},
		{"regions in the CLAs only: never local", bootstrap.Locality{Zone: "a"}, true, 0, true},
		{"no locality: nothing is local, nothing to report", bootstrap.Locality{}, true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bootstrap.Build(bootstrap.Options{
				Server: "deltaeds:18000", NodeID: "e", NodeCluster: "edge", AdminAddress: "127.0.0.1:9901",
				Clusters: []bootstrap.Cluster{{Namespace: "shop", Service: "web", Port: "http"}},
				Locality: tt.locality,
			})
			if err != nil {
				t.Fatal(err)
			}
			opts := translate.Options{}
			if tt.nodeLocality {
				opts = regions
			}
			local, _ := envoysim.LocalHosts(b.GetNode().GetLocality(), zonedService(opts), 0)
			if len(local) != tt.wantLocal {
				t.Errorf("Envoy finds %d local hosts, want %d", len(local), tt.wantLocal)
			}
			var found []string
			for _, f := range bootstrap.Check(b, bootstrap.CheckOptions{NodeLocality: tt.nodeLocality}) {
				if strings.HasPrefix(f.Where, "node.locality") {
					found = append(found, f.String())
				}
			}
			if (len(found) > 0) != tt.wantFinding {
				t.Errorf("check findings %q, want a locality finding: %v", found, tt.wantFinding)
			}
		})
	}
}

func TestSubZoneIsRefusedAndReported(t *testing.T) {
	opts := bootstrap.Options{
		Server: "deltaeds:18000", NodeID: "e", NodeCluster: "edge", AdminAddress: "127.0.0.1:9901",
		Locality: bootstrap.Locality{Zone: "a", SubZone: "rack7"},
	}
	if _, err := bootstrap.Build(opts); err == nil || !strings.Contains(err.Error(), "sub_zone") {
		t.Fatalf("Build with a sub_zone: err = %v, want a sub_zone error", err)
	}
	opts.Locality.SubZone = ""
	b, err := bootstrap.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.Node.Locality.SubZone = "rack7" // a hand-written bootstrap
	fs := bootstrap.Check(b, bootstrap.CheckOptions{})
	if len(fs) == 0 || fs[0].Where != "node.locality.sub_zone" {
		t.Fatalf("check findings %v, want one on node.locality.sub_zone", fs)
	}
}

// TestLocalityWeightsKeepTrafficEven: with locality_weighted_lb_config,
// Envoy sends a locality traffic in proportion to its weight; deltaeds
// weighs each by its endpoint count, so every host keeps an even share
// (3/4 of the traffic to zone a's three hosts, 1/4 to zone b's one). The
// same CLA without weights would get Envoy to send nothing anywhere.
func TestLocalityWeightsKeepTrafficEven(t *testing.T) {
	cla := zonedService(translate.Options{})
	shares := envoysim.LocalityShares(cla, 0)
	want := map[envoysim.Locality]float64{{Zone: "a"}: 0.75, {Zone: "b"}: 0.25}
	if len(shares) != len(want) {
		t.Fatalf("shares %v, want %v", shares, want)
	}
	for l, w := range want {
		if math.Abs(shares[l]-w) > 1e-9 {
			t.Errorf("locality %v gets %.3f of the traffic, want %.3f", l, shares[l], w)
		}
	}

	unweighted := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	for _, g := range unweighted.GetEndpoints() {
		g.LoadBalancingWeight = nil
	}
	if s := envoysim.LocalityShares(unweighted, 0); len(s) != 0 {
		t.Fatalf("unweighted localities get traffic %v; Envoy gives them none", s)
	}

	// Health lowers a locality's effective weight (overprovisioning 1.4):
	// two of zone a's three hosts unhealthy leave it 3 * min(1, 1.4/3).
	cla.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
	cla.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_UNHEALTHY
	s := envoysim.LocalityShares(cla, 0)
	a := 3 * 1.4 / 3
	if got, want := s[envoysim.Locality{Zone: "a"}], a/(a+1); math.Abs(got-want) > 1e-9 {
		t.Fatalf("zone a with one healthy host of three gets %.3f, want %.3f", got, want)
	}
}

// TestBootstrapNodeNameAndZone: --node-zone and --node-name write
// node.locality.zone and the node-name metadata field deltaeds serve reads
// by default (or the one --node-name-metadata-key names); without
// --node-name the node has no metadata, and --merge refuses it like the
// other node flags.
func TestBootstrapNodeNameAndZone(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		wantKey string
	}{
		{[]string{"--node-name", "node-7"}, bootstrap.NodeNameMetadataKey},
		{[]string{"--node-name", "node-7", "--node-name-metadata-key", "example.com/node"}, "example.com/node"},
		{nil, ""},
	} {
		out, stderr, err, _ := runCommand(t, t.Context(), bootstrap.Command(),
			append([]string{"--cluster", "shop/web/http", "--node-zone", "z1", "--format", "json"}, tt.args...)...)
		if err != nil {
			t.Fatalf("%v: %v %s", tt.args, err, stderr)
		}
		b, err := bootstrap.Unmarshal([]byte(out))
		if err != nil {
			t.Fatal(err)
		}
		if z := b.GetNode().GetLocality().GetZone(); z != "z1" {
			t.Errorf("%v: zone %q", tt.args, z)
		}
		fields := b.GetNode().GetMetadata().GetFields()
		if tt.wantKey == "" {
			if len(fields) != 0 {
				t.Errorf("%v: metadata %v, want none", tt.args, fields)
			}
			continue
		}
		if len(fields) != 1 || fields[tt.wantKey].GetStringValue() != "node-7" {
			t.Errorf("%v: metadata %v, want %s=node-7", tt.args, fields, tt.wantKey)
		}
	}
	if _, _, err, code := runCommand(t, t.Context(), bootstrap.Command(), "--merge", "testdata/does-not-matter.yaml", "--node-name", "n"); err == nil || code != bootstrap.ExitUsage || !strings.Contains(err.Error(), "node-name") {
		t.Errorf("--merge with --node-name: %v (exit %d), want a usage error naming it", err, code)
	}
}
