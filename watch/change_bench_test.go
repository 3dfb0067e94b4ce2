package watch_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/internal/supervisor"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// rollingService is a Service of nSlices x perSlice pods with two ports
// (TCP and UDP), three zones, pods and nodes, 2% terminating: the shape of
// translate's BenchmarkServiceLarge at the size of issue 14's rolling-10k.
func rollingService(nSlices, perSlice int) []*discoveryv1.EndpointSlice {
	zones := []string{"zone-a", "zone-b", "zone-c"}
	ports := []discoveryv1.EndpointPort{
		{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)},
		{Name: ptr("dns"), Port: ptr(int32(53)), Protocol: ptr(corev1.ProtocolUDP)},
	}
	out := make([]*discoveryv1.EndpointSlice, 0, nSlices)
	for s := range nSlices {
		eps := make([]discoveryv1.Endpoint, 0, perSlice)
		for i := range perSlice {
			n := s*perSlice + i
			e := discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", n>>16, (n>>8)&0xff, n&0xff)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
				Zone:       ptr(zones[n%len(zones)]),
				NodeName:   ptr(fmt.Sprintf("node-%d", n%500)),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("web-%d", n), Namespace: "ns"},
			}
			if n%50 == 0 {
				e.Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
			}
			eps = append(eps, e)
		}
		out = append(out, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "ns", Name: fmt.Sprintf("web-%d", s), UID: types.UID(fmt.Sprintf("uid-%d", s)),
				ResourceVersion: "1", Labels: map[string]string{translate.ServiceNameLabel: "web"},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       ports,
			Endpoints:   eps,
		})
	}
	return out
}

// changeOne returns slices with one endpoint of one slice replaced, as a
// pod of a rollout is: a new pod, a new address, in a slice of a new
// resourceVersion. Step i touches slice i%len(in), endpoint
// (i/len(in))%perSlice; steps up to 65,536 give distinct addresses.
func changeOne(in []*discoveryv1.EndpointSlice, step int) []*discoveryv1.EndpointSlice {
	out := append([]*discoveryv1.EndpointSlice(nil), in...)
	si := step % len(in)
	s := in[si].DeepCopy()
	s.ResourceVersion = strconv.Itoa(step + 2)
	ei := (step / len(in)) % len(s.Endpoints)
	s.Endpoints[ei].Addresses = []string{fmt.Sprintf("10.200.%d.%d", (step>>8)&0xff, step&0xff)}
	s.Endpoints[ei].TargetRef.Name = fmt.Sprintf("web-new-%d", step)
	out[si] = s
	return out
}

func ptr[T any](v T) *T { return &v }

// BenchmarkOneEndpointChange measures what watch does for a one-endpoint
// change in a 10,000-endpoint Service (100 slices): translate the Service
// and serialize and version its CLAs, per change. "full" is translate.Service
// and xds.NewResource (marshal and hash); "cached" is a
// translate.ServiceCache and xds.NewEncodedResource (hash and copy of the
// pieces). Each step replaces one pod of the previous step's Service (a new
// pod, a new address, in a new resourceVersion of one slice, the next slice
// each time); the step's slices are made with the timer stopped. Besides
// ns/op, which counts waiting for a CPU on a shared machine, cpu-ns/op is
// the process's CPU time (user and system, GC included) per change.
func BenchmarkOneEndpointChange(b *testing.B) {
	base := rollingService(100, 100)
	run := func(b *testing.B, change func([]*discoveryv1.EndpointSlice)) {
		cur := base
		b.ReportAllocs()
		var cpu time.Duration
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			cur = changeOne(cur, i)
			before := supervisor.SelfCPU()
			b.StartTimer()
			change(cur)
			cpu += supervisor.SelfCPU() - before
		}
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
	b.Run("full", func(b *testing.B) {
		run(b, func(in []*discoveryv1.EndpointSlice) {
			res := translate.Service("ns", "web", in, translate.Options{})
			for _, c := range res.CLAs {
				if _, err := xds.NewResource(c.ClusterName, xds.EndpointType, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("cached", func(b *testing.B) {
		c := translate.NewServiceCache("ns", "web")
		c.Translate(base, translate.Options{})
		run(b, func(in []*discoveryv1.EndpointSlice) {
			res := c.Translate(in, translate.Options{})
			for j, cla := range res.CLAs {
				if _, err := xds.NewEncodedResource(cla.ClusterName, xds.EndpointType, res.Encoded[j]); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
