package translate_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/translate"
)

// ref sets the endpoint's targetRef; an empty namespace is left empty.
func ref(kind, namespace, name, uid string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.TargetRef = &corev1.ObjectReference{Kind: kind, Namespace: namespace, Name: name, UID: types.UID(uid)}
	}
}

// podUID is a Pod targetRef as the EndpointSlice controller writes it.
func podUID(name string) epOpt { return ref("Pod", testNS, name, "uid-"+name) }

// Issue 10: a dual-stack pod is one host, not two, and single-family Envoys
// get only their family.
func TestServiceIPFamilies(t *testing.T) {
	http80 := ports(tcp("http", 80))
	tests := []struct {
		name    string
		slices  []*discoveryv1.EndpointSlice
		opts    translate.Options
		want    map[string][]string
		skipped translate.SkipCounts
	}{
		{
			name: "dual: one LbEndpoint per pod, IPv4 first, IPv6 in additional_addresses",
			slices: []*discoveryv1.EndpointSlice{
				v6("b6", http80, ep("fd00::2", podUID("web-2"), zone("a")), ep("fd00::1", podUID("web-1"), zone("a"))),
				v4("a4", http80, ep("10.0.0.1", podUID("web-1"), zone("a")), ep("10.0.0.2", podUID("web-2"), zone("a"))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY +fd00::1 pod=ns/web-1",
				"p0 zone=a 10.0.0.2:80/TCP HEALTHY +fd00::2 pod=ns/web-2",
			}},
		},
		{
			name: "dual: endpoints without a targetRef are paired by nothing",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1")),
				v6("b6", http80, ep("fd00::1")),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p0 zone= [fd00::1]:80/TCP HEALTHY",
			}},
		},
		{
			name: "dual: the whole targetRef must match (kind, namespace, name, uid as given)",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80,
					ep("10.0.0.1", ref("Pod", testNS, "web-1", "u1")),
					ep("10.0.0.2", ref("Pod", testNS, "web-2", "u2")),
					ep("10.0.0.3", ref("Pod", "", "web-3", "")), // no namespace: the Service's
					ep("10.0.0.4", ref("Pod", testNS, "web-4", "u4")),
					ep("10.0.0.5", ref("Node", "", "n5", "")),
				),
				v6("b6", http80,
					ep("fd00::1", ref("Pod", testNS, "web-1", "u1-new")), // re-created pod
					ep("fd00::2", ref("Pod", testNS, "web-2", "")),       // uid on one side only
					ep("fd00::3", ref("Pod", testNS, "web-3", "")),
					ep("fd00::4", ref("Node", testNS, "web-4", "u4")), // another kind
					ep("fd00::5", ref("Node", "", "n5", "")),          // a node is a node
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY pod=ns/web-1",
				"p0 zone= 10.0.0.2:80/TCP HEALTHY pod=ns/web-2",
				"p0 zone= 10.0.0.3:80/TCP HEALTHY +fd00::3 pod=ns/web-3",
				"p0 zone= 10.0.0.4:80/TCP HEALTHY pod=ns/web-4",
				"p0 zone= 10.0.0.5:80/TCP HEALTHY +fd00::5",
				"p0 zone= [fd00::1]:80/TCP HEALTHY pod=ns/web-1",
				"p0 zone= [fd00::2]:80/TCP HEALTHY pod=ns/web-2",
				"p0 zone= [fd00::4]:80/TCP HEALTHY",
			}},
		},
		{
			// (One CLA never mixes protocols, so the protocol cannot differ.)
			name: "dual: pairs only on the same port number",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", ports(tcp("http", 8080), withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("10.0.0.1", podUID("p"))),
				v6("b6", ports(tcp("http", 9090), withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("fd00::1", podUID("p"))),
			},
			want: map[string][]string{
				"ns/svc/dns": {
					"p0 zone= 10.0.0.1:53/UDP HEALTHY +fd00::1 pod=ns/p",
				},
				"ns/svc/http": {
					"p0 zone= 10.0.0.1:8080/TCP HEALTHY pod=ns/p",
					"p0 zone= [fd00::1]:9090/TCP HEALTHY pod=ns/p",
				},
			},
		},
		{
			name: "dual: a targetRef with two addresses of one family is ambiguous and stays apart",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", ref("Pod", testNS, "web-0", "")), ep("10.0.0.9", ref("Pod", testNS, "web-0", ""))),
				v6("b6", http80, ep("fd00::1", ref("Pod", testNS, "web-0", ""))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY pod=ns/web-0",
				"p0 zone= 10.0.0.9:80/TCP HEALTHY pod=ns/web-0",
				"p0 zone= [fd00::1]:80/TCP HEALTHY pod=ns/web-0",
			}},
		},
		{
			name: "dual: the IPv4 endpoint's conditions and zone decide",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", podUID("p"), terminating, zone("a")), ep("10.0.0.2", podUID("q"), zone("a"))),
				v6("b6", http80, ep("fd00::1", podUID("p"), zone("b")), ep("fd00::2", podUID("q"), terminating, zone("b"))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone=a 10.0.0.2:80/TCP HEALTHY +fd00::2 pod=ns/q",
				"p1 zone=a 10.0.0.1:80/TCP HEALTHY +fd00::1 pod=ns/p",
			}},
		},
		{
			name: "dual: an endpoint left out in one family leaves the other alone",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", podUID("p"), starting)),
				v6("b6", http80, ep("fd00::1", podUID("p"))),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= [fd00::1]:80/TCP HEALTHY pod=ns/p"}},
			skipped: translate.SkipCounts{UnreadyEndpoints: 1},
		},
		{
			name: "dual: a duplicate endpoint is paired once",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", podUID("p"))),
				v4("b4", http80, ep("10.0.0.1", podUID("p"))),
				v6("c6", http80, ep("fd00::1", podUID("p"))),
				v6("d6", http80, ep("fd00:0::1", podUID("p"))),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY +fd00::1 pod=ns/p"}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 2},
		},
		{
			name: "ipv4: IPv6 slices are skipped and counted, their ports too",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", podUID("p"))),
				v6("b6", ports(tcp("http", 80), tcp("v6only", 81)), ep("fd00::1", podUID("p"))),
			},
			opts:    translate.Options{Family: translate.IPFamilyIPv4},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY pod=ns/p"}},
			skipped: translate.SkipCounts{OtherFamilySlices: 1},
		},
		{
			name: "ipv6: IPv4 slices are skipped and counted",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80, ep("10.0.0.1", podUID("p"))),
				v6("b6", http80, ep("fd00::1", podUID("p"))),
				slice("f", discoveryv1.AddressTypeFQDN, http80, ep("example.com")),
			},
			opts:    translate.Options{Family: translate.IPFamilyIPv6},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= [fd00::1]:80/TCP HEALTHY pod=ns/p"}},
			skipped: translate.SkipCounts{OtherFamilySlices: 1, FQDNSlices: 1},
		},
		{
			// kube-proxy keeps one EndpointSliceCache per family it proxies
			// (pkg/proxy/endpointslicecache.go): another family's slices are
			// not seen at all, so they cannot decide a port's protocol.
			name: "ipv4: a newer IPv6 slice does not outvote the IPv4 slices' protocol",
			slices: []*discoveryv1.EndpointSlice{
				created(v4("a4", ports(tcp("dns", 53)), ep("10.0.0.1")), 100),
				created(v6("b6", ports(withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("fd00::1"), ep("fd00::2")), 200),
			},
			opts:    translate.Options{Family: translate.IPFamilyIPv4},
			want:    map[string][]string{"ns/svc/dns": {"p0 zone= 10.0.0.1:53/TCP HEALTHY"}},
			skipped: translate.SkipCounts{OtherFamilySlices: 1},
		},
		{
			name: "an FQDN slice never votes on a port's protocol",
			slices: []*discoveryv1.EndpointSlice{
				created(v4("a4", ports(tcp("dns", 53)), ep("10.0.0.1")), 100),
				created(slice("f", discoveryv1.AddressTypeFQDN, ports(withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("example.com"), ep("example.org")), 200),
			},
			want:    map[string][]string{"ns/svc/dns": {"p0 zone= 10.0.0.1:53/TCP HEALTHY"}},
			skipped: translate.SkipCounts{FQDNSlices: 1},
		},
		{
			name: "ipv4 with only IPv6 slices: no CLAs",
			slices: []*discoveryv1.EndpointSlice{
				v6("b6", http80, ep("fd00::1")),
			},
			opts:    translate.Options{Family: translate.IPFamilyIPv4},
			want:    map[string][]string{},
			skipped: translate.SkipCounts{OtherFamilySlices: 1},
		},
		{
			// kube-proxy reads endpoint addresses with ParseIPSloppy; Envoy's
			// inet_pton would NACK the whole CLA over one leading zero.
			name: "addresses in non-canonical form are read as kube-proxy reads them and sent canonical",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80,
					ep("010.000.000.001"), // decimal, as kube-proxy reads it, not octal
					ep("10.0.0.01"),
					ep("10.0.0.2"),
				),
				v6("b6", http80,
					ep("FD00:0000:0000:0000:0000:0000:0000:0001"),
					ep("fd00::1"),
					ep("fd00::0:2"),
					ep("fd00::10.0.0.3"), // embedded dotted quad
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p0 zone= 10.0.0.2:80/TCP HEALTHY",
				"p0 zone= [fd00::1]:80/TCP HEALTHY",
				"p0 zone= [fd00::2]:80/TCP HEALTHY",
				"p0 zone= [fd00::a00:3]:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 2},
		},
		{
			name: "what is not an address of the slice's family is still rejected",
			slices: []*discoveryv1.EndpointSlice{
				v4("a4", http80,
					ep("0x0a.0.0.1"), // hex, which inet_aton would take
					ep("10.1"),
					ep("10.0.0.256"),
					ep("::ffff:10.0.0.1"), // IPv6 text in an IPv4 slice
					ep(" 10.0.0.1"),
					ep("10.0.0.5"),
				),
				v6("b6", http80,
					ep("::ffff:10.0.0.7"),  // IPv4-mapped
					ep("::ffff:010.0.0.7"), // and sloppily written
					ep("fe80::1%eth0"),     // zoned
					ep("10.0.0.8"),         // IPv4 in an IPv6 slice
					ep("fd00::5"),
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.5:80/TCP HEALTHY",
				"p0 zone= [fd00::5]:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{InvalidEndpoints: 9},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := deepCopyAll(tt.slices)
			res := translate.Service(testNS, testSvc, tt.slices, tt.opts)
			checkResult(t, testNS, testSvc, res)
			if !reflect.DeepEqual(tt.slices, before) {
				t.Error("Service modified its input")
			}
			got := map[string][]string{}
			for _, cla := range res.CLAs {
				got[cla.GetClusterName()] = summarize(cla)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CLAs:\n got %s\nwant %s", render(got), render(tt.want))
			}
			if res.Skipped != tt.skipped {
				t.Errorf("Skipped:\n got %+v\nwant %+v", res.Skipped, tt.skipped)
			}
			// The incremental translation follows the same rules.
			cached := translate.NewServiceCache(testNS, testSvc).Translate(tt.slices, tt.opts)
			gotCached := map[string][]string{}
			for _, cla := range cached.CLAs {
				gotCached[cla.GetClusterName()] = summarize(cla)
			}
			if !reflect.DeepEqual(gotCached, tt.want) || cached.Skipped != tt.skipped {
				t.Errorf("ServiceCache:\n got %s %+v\nwant %s %+v", render(gotCached), cached.Skipped, render(tt.want), tt.skipped)
			}
		})
	}
}

// TestServicePairingDeterministic: pairing depends on the set of slices,
// never on their order, the order of their endpoints, or which copy of a
// duplicated endpoint came first.
func TestServicePairingDeterministic(t *testing.T) {
	var in []*discoveryv1.EndpointSlice
	http := ports(tcp("http", 80))
	for s := range 4 {
		var eps4, eps6 []discoveryv1.Endpoint
		for i := range 30 {
			n := s*20 + i // slices of one family overlap by 10 endpoints, whose copies differ
			opts := []epOpt{podUID(fmt.Sprintf("p%d", n)), zone([]string{"a", "b"}[n%2])}
			switch {
			case (n+s)%7 == 3:
				opts = append(opts, terminating)
			case (n+s)%11 == 5:
				opts[0] = ref("Pod", testNS, fmt.Sprintf("p%d", n), "") // a uid-less copy
			case n%13 == 0:
				opts = nil // no targetRef
			}
			eps4 = append(eps4, ep(fmt.Sprintf("10.0.%d.%d", n/200, n%200), opts...))
			eps6 = append(eps6, ep(fmt.Sprintf("fd00::%x", n), opts...))
		}
		in = append(in, v4(fmt.Sprintf("v4-%d", s), http, eps4...), v6(fmt.Sprintf("v6-%d", s), http, eps6...))
	}
	for _, opts := range []translate.Options{{}, {IncludeUnready: true}} {
		want := translate.Service(testNS, testSvc, in, opts)
		checkResult(t, testNS, testSvc, want)
		paired := 0
		for _, g := range want.CLAs[0].GetEndpoints() {
			for _, lb := range g.GetLbEndpoints() {
				paired += len(lb.GetEndpoint().GetAdditionalAddresses())
			}
		}
		if paired == 0 || want.Skipped.DuplicateEndpoints == 0 {
			t.Fatalf("%d pairs, %d duplicates: the test would prove little", paired, want.Skipped.DuplicateEndpoints)
		}
		wantBytes := marshalAll(t, want)
		rng := rand.New(rand.NewPCG(3, 4))
		for range 50 {
			got := translate.Service(testNS, testSvc, shuffled(rng, in), opts)
			if got.Skipped != want.Skipped {
				t.Fatalf("Skipped differs after shuffle: %+v vs %+v", got.Skipped, want.Skipped)
			}
			gotBytes := marshalAll(t, got)
			if len(gotBytes) != len(wantBytes) || !bytes.Equal(gotBytes[0], wantBytes[0]) {
				t.Fatalf("CLA differs after shuffle")
			}
		}
	}
}

func TestParseIPFamily(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want translate.IPFamily
		ok   bool
	}{
		{"dual", translate.IPFamilyDual, true},
		{"ipv4", translate.IPFamilyIPv4, true},
		{"IPv6", translate.IPFamilyIPv6, true},
		{"", 0, false},
		{"v4", 0, false},
		{"ipv4,ipv6", 0, false},
	} {
		got, err := translate.ParseIPFamily(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseIPFamily(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok {
			if back, err := translate.ParseIPFamily(got.String()); err != nil || back != got {
				t.Errorf("ParseIPFamily(%v.String()) = %v, %v", got, back, err)
			}
		}
	}
	var zero translate.Options
	if zero.Family != translate.IPFamilyDual {
		t.Errorf("the zero Options serve %v, want dual", zero.Family)
	}
}
