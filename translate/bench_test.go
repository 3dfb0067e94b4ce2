package translate_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/deltaeds/deltaeds/translate"
)

// BenchmarkServiceLarge translates a Service of 1,000 slices x 100 endpoints
// (100,000 pods, the scale the EndpointSlice controller is designed for) with
// two ports, zones, pods and nodes, and a few terminating endpoints.
func BenchmarkServiceLarge(b *testing.B) {
	const nSlices, perSlice = 1000, 100
	zones := []string{"zone-a", "zone-b", "zone-c"}
	p := ports(tcp("http", 8080), withProto(tcp("dns", 53), corev1.ProtocolUDP))
	in := make([]*discoveryv1.EndpointSlice, 0, nSlices)
	for s := range nSlices {
		eps := make([]discoveryv1.Endpoint, 0, perSlice)
		for i := range perSlice {
			n := s*perSlice + i
			opts := []epOpt{
				zone(zones[n%len(zones)]),
				pod(fmt.Sprintf("web-%d", n)),
				node(fmt.Sprintf("node-%d", n%500)),
			}
			if n%50 == 0 {
				opts = append(opts, terminating)
			}
			eps = append(eps, ep(fmt.Sprintf("10.%d.%d.%d", n>>16, (n>>8)&0xff, n&0xff), opts...))
		}
		in = append(in, v4(fmt.Sprintf("web-%d", s), p, eps...))
	}

	b.ReportAllocs()
	for b.Loop() {
		res := translate.Service(testNS, testSvc, in, translate.Options{})
		if len(res.CLAs) != 2 {
			b.Fatalf("%d CLAs", len(res.CLAs))
		}
	}
}
