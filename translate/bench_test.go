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
func BenchmarkServiceLarge(b *testing.B) { benchmarkService(b, false) }

// BenchmarkServiceLargeDualStack is the same Service dual-stack: each pod
// also in an IPv6 slice, so 200,000 endpoints are paired into 100,000 hosts
// per port.
func BenchmarkServiceLargeDualStack(b *testing.B) { benchmarkService(b, true) }

func benchmarkService(b *testing.B, dual bool) {
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
		if dual {
			eps6 := make([]discoveryv1.Endpoint, len(eps))
			for i, e := range eps {
				eps6[i] = *e.DeepCopy()
				eps6[i].Addresses = []string{fmt.Sprintf("fd00::%x", s*perSlice+i)}
			}
			in = append(in, v6(fmt.Sprintf("web-%d-v6", s), p, eps6...))
		}
	}

	b.ReportAllocs()
	for b.Loop() {
		res := translate.Service(testNS, testSvc, in, translate.Options{})
		if len(res.CLAs) != 2 {
			b.Fatalf("%d CLAs", len(res.CLAs))
		}
	}
}
