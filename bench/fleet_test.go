package bench

import (
	"net/netip"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/deltaeds/deltaeds/bench/control"
)

// TestSameEndpoints: the reconnect check compares what a client routes to
// with the generator's endpoints, in any order, and tells an empty CLA, a
// missing endpoint and an extra one apart from a match.
func TestSameEndpoints(t *testing.T) {
	ep := func(s string) control.Endpoint {
		ap := netip.MustParseAddrPort(s)
		return control.Endpoint{Addr: ap.Addr(), Port: uint32(ap.Port())}
	}
	want := []control.Endpoint{ep("198.18.0.1:8080"), ep("198.18.0.2:8080")}
	seen := make(map[control.Endpoint]struct{})
	for _, tc := range []struct {
		name string
		cla  *endpointv3.ClusterLoadAssignment
		ok   bool
	}{
		{"same", control.BuildCLA(control.Set{Name: "x", Endpoints: want}), true},
		{"reordered", control.BuildCLA(control.Set{Name: "x", Endpoints: []control.Endpoint{want[1], want[0]}}), true},
		{"empty", &endpointv3.ClusterLoadAssignment{ClusterName: "x"}, false},
		{"nil", nil, false},
		{"one missing", control.BuildCLA(control.Set{Name: "x", Endpoints: want[:1]}), false},
		{"another port", control.BuildCLA(control.Set{Name: "x", Endpoints: []control.Endpoint{want[0], ep("198.18.0.2:9090")}}), false},
		{"one extra", control.BuildCLA(control.Set{Name: "x", Endpoints: append([]control.Endpoint{ep("198.18.0.3:8080")}, want...)}), false},
	} {
		if err := sameEndpoints(tc.cla, want, seen); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
