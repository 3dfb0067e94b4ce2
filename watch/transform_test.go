package watch

import (
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// fresh returns a copy of s in memory of its own, as each decoded object's
// strings are.
func fresh(s string) string { return strings.Clone(s) }

// TestSlimSharesRepeatedValues: endpoints of different slices on the same
// node and zone, with the same conditions and pod namespace, end up sharing
// one copy of each (issue 14: ~100 of the ~490 bytes per endpoint the
// informer held at 1,000,000 endpoints), with their values unchanged.
func TestSlimSharesRepeatedValues(t *testing.T) {
	sl := newSlimmer()
	var outs []discoveryv1.Endpoint
	for i, ip := range []string{"10.0.0.1", "10.0.0.2"} {
		in := slice(fresh("ns"), fresh("web-")+ip, "web", 8080, ip)
		ready, serving, term := true, true, false
		node, zone := fresh("node-1"), fresh("zone-a")
		in.Endpoints[0].NodeName, in.Endpoints[0].Zone = &node, &zone
		in.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}
		in.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: fresh("Pod"), Namespace: fresh("ns"), Name: fresh("web-") + string(rune('a'+i)), UID: "u"}
		out, err := sl.slim(in)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out.(*discoveryv1.EndpointSlice).Endpoints[0])
	}
	a, b := outs[0], outs[1]
	if *a.NodeName != "node-1" || *a.Zone != "zone-a" || !*a.Conditions.Ready || !*a.Conditions.Serving || *a.Conditions.Terminating ||
		a.TargetRef.Kind != "Pod" || a.TargetRef.Namespace != "ns" || a.TargetRef.Name != "web-a" || b.TargetRef.Name != "web-b" {
		t.Fatalf("values changed: %+v %+v", a, b)
	}
	if a.NodeName != b.NodeName || a.Zone != b.Zone {
		t.Errorf("node name and zone not shared: %p %p, %p %p", a.NodeName, b.NodeName, a.Zone, b.Zone)
	}
	if a.Conditions.Ready != b.Conditions.Ready || a.Conditions.Terminating != b.Conditions.Terminating {
		t.Errorf("conditions not shared")
	}
	if unsafe.StringData(a.TargetRef.Kind) != unsafe.StringData(b.TargetRef.Kind) ||
		unsafe.StringData(a.TargetRef.Namespace) != unsafe.StringData(b.TargetRef.Namespace) {
		t.Errorf("pod kind and namespace not shared")
	}
}
