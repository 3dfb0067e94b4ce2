package e2e

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 11: a dual-stack Service is one Envoy host per pod (issue 10).
//
// The control plane is single-stack, but the API server stores IPv6 EndpointSlices all the same,
// so the Service's IPv4 and IPv6 slices are written here by hand, as a dual-stack cluster's
// EndpointSlice controller writes them (pods as targetRefs, with uids), under a managed-by label
// of our own so that no controller touches them. Every check reads what envoysim routes with.
//
// With the default --ip-family=dual, each pod is one LbEndpoint: its IPv4 address, its IPv6
// address in additional_addresses; endpoints
// without a targetRef stay hosts of their own; a pod that leaves the IPv6 slice keeps its IPv4
// host. With --ip-family=ipv4, an Envoy gets no IPv6 address at all, and the ignored slices are
// counted.
func TestDualStackOneHostPerPod(t *testing.T) {
	const ns = "s11-dualstack"
	e := scenario(t, ns)
	ctx := t.Context()
	if _, err := e.cluster.CreateService(ctx, ns, "web", nil, []harness.ServicePort{httpPort}); err != nil {
		t.Fatal(err)
	}
	name := translate.ClusterName(ns, "web", "http")

	// Addresses in canonical form: this API server refuses others in new slices ("must be in
	// canonical form"); translate's tests cover those that older objects carry.
	type pod struct{ name, v4, v6 string }
	pods := []pod{
		{name: "web-0", v4: e.cluster.AllocIP(), v6: "fd00:11::a"},
		{name: "web-1", v4: e.cluster.AllocIP(), v6: "fd00:11::b"},
		{name: "web-2", v4: e.cluster.AllocIP(), v6: "fd00:11::c"},
	}
	bare4, bare6 := e.cluster.AllocIP(), "fd00:11::ff" // no targetRef: paired by nothing
	v4 := dualSlice(ns, "web-ipv4", discoveryv1.AddressTypeIPv4)
	v6 := dualSlice(ns, "web-ipv6", discoveryv1.AddressTypeIPv6)
	for i, p := range pods {
		ref := &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.name, UID: types.UID(fmt.Sprintf("uid-%s-%d", p.name, i))}
		v4.Endpoints = append(v4.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.v4}, TargetRef: ref, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
		v6.Endpoints = append(v6.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.v6}, TargetRef: ref, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	v4.Endpoints = append(v4.Endpoints, discoveryv1.Endpoint{Addresses: []string{bare4}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	v6.Endpoints = append(v6.Endpoints, discoveryv1.Endpoint{Addresses: []string{bare6}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	slices := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	for _, s := range []*discoveryv1.EndpointSlice{v4, v6} {
		if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", s.Name, err)
		}
	}

	dual := e.deltaeds(t, harness.DeltaedsOptions{Name: "s11-dual"})
	only4 := e.deltaeds(t, harness.DeltaedsOptions{Name: "s11-ipv4", ExtraArgs: []string{"--ip-family=ipv4"}})

	want := map[string]string{bare4: "", bare6: ""} // address -> additional address
	for _, p := range pods {
		want[p.v4] = p.v6
	}
	fd := e.fleet(t, envoyfleet.Options{Size: 2, Target: dual.XDSAddress(), NodePrefix: "s11-dual"})
	fd.Subscribe(name)
	waitAll(t, "one host per pod, its IPv6 address in additional_addresses", fd, routesHosts(name, want))

	f4 := e.fleet(t, envoyfleet.Options{Size: 1, Target: only4.XDSAddress(), NodePrefix: "s11-ipv4"})
	f4.Subscribe(name)
	want4 := map[string]string{bare4: ""}
	for _, p := range pods {
		want4[p.v4] = ""
	}
	waitAll(t, "IPv4 hosts only with --ip-family=ipv4", f4, routesHosts(name, want4))
	waitMetric(t, only4, "deltaeds_translate_skipped_total", []string{"reason", "other_family_slice"}, func(v float64) bool { return v >= 1 })
	if m := metrics(t, dual); m.Value("deltaeds_translate_skipped_total", "reason", "other_family_slice") != 0 {
		t.Errorf("dual-stack deltaeds ignored slices of a family")
	}

	t.Run("a pod that leaves the IPv6 slice keeps its IPv4 host", func(t *testing.T) {
		cur, err := slices.Get(ctx, v6.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Endpoints = cur.Endpoints[1:] // web-0
		if _, err := slices.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		want[pods[0].v4] = ""
		waitAll(t, "web-0 without its IPv6 address", fd, routesHosts(name, want))
		waitAll(t, "no change with --ip-family=ipv4", f4, routesHosts(name, want4))
	})
}

// dualSlice is an empty EndpointSlice of Service "web" with the http port, managed by the test.
func dualSlice(ns, name string, at discoveryv1.AddressType) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: "web",
			discoveryv1.LabelManagedBy:   "e2e.deltaeds.test",
		}},
		AddressType: at,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr(httpPort.Name), Port: ptr(httpPort.TargetPort), Protocol: ptr(corev1.ProtocolTCP),
		}},
	}
}

// routesHosts is a predicate: the client routes name to exactly the hosts of want, each keyed by
// its address and carrying the additional addresses want names ("" for none), all ready at
// priority 0 on the http target port.
func routesHosts(name string, want map[string]string) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		r, ok := s.Route(name)
		if !ok {
			return false
		}
		got := map[string]string{}
		for _, g := range r.CLA.GetEndpoints() {
			for _, lb := range g.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if g.GetPriority() != 0 || !harness.UsableHealth(lb.GetHealthStatus()) || sa.GetPortValue() != uint32(httpPort.TargetPort) {
					return false
				}
				var extra []string
				for _, a := range lb.GetEndpoint().GetAdditionalAddresses() {
					xs := a.GetAddress().GetSocketAddress()
					if xs.GetPortValue() != sa.GetPortValue() {
						return false
					}
					extra = append(extra, xs.GetAddress())
				}
				if _, dup := got[sa.GetAddress()]; dup {
					return false
				}
				got[sa.GetAddress()] = strings.Join(extra, ",")
			}
		}
		return maps.Equal(got, want)
	}
}
