package translate_test

import (
	"bytes"
	"fmt"
	"go/build"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/deltaeds/deltaeds/translate"
)

func TestService(t *testing.T) {
	http80 := ports(tcp("http", 80))
	tests := []struct {
		name string
		// namespace and service default to testNS and testSvc.
		namespace, service string
		slices             []*discoveryv1.EndpointSlice
		opts               translate.Options
		want               map[string][]string // CLA name -> summarize()
		skipped            translate.SkipCounts
	}{
		{
			name: "several slices are merged",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.2"), ep("10.0.0.1")),
				v4("b", http80, ep("10.0.0.10")),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p0 zone= 10.0.0.2:80/TCP HEALTHY",
				"p0 zone= 10.0.0.10:80/TCP HEALTHY", // numeric, not string, order
			}},
		},
		{
			name: "one CLA per port name",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", ports(tcp("http", 80), tcp("grpc", 9000)), ep("10.0.0.1")),
			},
			want: map[string][]string{
				"ns/svc/grpc": {"p0 zone= 10.0.0.1:9000/TCP HEALTHY"},
				"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY"},
			},
		},
		{
			name: "duplicate across slices keeps the best conditions",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1", terminating, zone("a"))),
				v4("b", http80, ep("10.0.0.1", zone("b"))),
				v4("c", http80, ep("10.0.0.1", starting, zone("a"))),
			},
			opts: translate.Options{IncludeUnready: true},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone=b 10.0.0.1:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 2},
		},
		{
			name: "duplicate with equal conditions: smallest zone, then pod wins",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1", zone("b"), pod("p0"))),
				v4("b", http80, ep("10.0.0.1", zone("a"), pod("p2"))),
				v4("c", http80, ep("10.0.0.1", zone("a"), pod("p1"))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone=a 10.0.0.1:80/TCP HEALTHY pod=ns/p1",
			}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 2},
		},
		{
			name: "duplicate within one slice",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1"), ep("10.0.0.1")),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY"}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 1},
		},
		{
			name: "dual-stack slices share the CLA; IPv6 canonicalized",
			slices: []*discoveryv1.EndpointSlice{
				v6("b", http80, ep("fd00:0:0::1")),
				v4("a", http80, ep("10.0.0.1")),
				v6("c", http80, ep("fd00::1")), // same address as in b
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p0 zone= [fd00::1]:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{DuplicateEndpoints: 1},
		},
		{
			name: "each endpoint takes its own slice's port number",
			slices: []*discoveryv1.EndpointSlice{
				v4("old", ports(tcp("http", 8080)), ep("10.0.0.1"), ep("10.0.0.2")),
				v4("new", ports(tcp("http", 9090)), ep("10.0.0.1"), ep("10.0.0.3")),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:8080/TCP HEALTHY",
				"p0 zone= 10.0.0.1:9090/TCP HEALTHY",
				"p0 zone= 10.0.0.2:8080/TCP HEALTHY",
				"p0 zone= 10.0.0.3:9090/TCP HEALTHY",
			}},
		},
		{
			name: "FQDN slices are skipped",
			slices: []*discoveryv1.EndpointSlice{
				slice("f", discoveryv1.AddressTypeFQDN, http80, ep("backend.example.com")),
				v4("a", http80, ep("10.0.0.1")),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY"}},
			skipped: translate.SkipCounts{FQDNSlices: 1},
		},
		{
			name: "serving terminating endpoints are the priority 1 fallback, HEALTHY",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.2", terminating), ep("10.0.0.1")),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p1 zone= 10.0.0.2:80/TCP HEALTHY",
			}},
		},
		{
			name: "only terminating endpoints: empty priority 0 avoids a gap",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.2", terminating, zone("z"))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= (empty)",
				"p1 zone=z 10.0.0.2:80/TCP HEALTHY",
			}},
		},
		{
			name: "not serving and not ready endpoints are left out; the port's CLA stays",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", notServing),
					ep("10.0.0.2", starting),
					ep("10.0.0.3", conds(no, yes, no)), // serving yet not terminating nor ready: trust ready
				),
			},
			want:    map[string][]string{"ns/svc/http": nil},
			skipped: translate.SkipCounts{UnreadyEndpoints: 3},
		},
		{
			// Issue 10: at priority 0 they would lower its health in Envoy and move
			// traffic to the terminating pod while ready pods exist.
			name: "IncludeUnready sends them UNHEALTHY at priority 2, after the terminating fallback",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.3", notServing),
					ep("10.0.0.2", terminating),
					ep("10.0.0.1", starting),
					ep("10.0.0.4"),
				),
			},
			opts: translate.Options{IncludeUnready: true},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.4:80/TCP HEALTHY",
				"p1 zone= 10.0.0.2:80/TCP HEALTHY",
				"p2 zone= 10.0.0.1:80/TCP UNHEALTHY",
				"p2 zone= 10.0.0.3:80/TCP UNHEALTHY",
			}},
		},
		{
			name: "IncludeUnready without terminating endpoints: an empty priority 1 avoids a gap",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1", starting), ep("10.0.0.4")),
			},
			opts: translate.Options{IncludeUnready: true},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.4:80/TCP HEALTHY",
				"p1 zone= (empty)",
				"p2 zone= 10.0.0.1:80/TCP UNHEALTHY",
			}},
		},
		{
			name: "IncludeUnready with only unready endpoints: empty priorities 0 and 1",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1", starting)),
			},
			opts: translate.Options{IncludeUnready: true},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= (empty)",
				"p1 zone= (empty)",
				"p2 zone= 10.0.0.1:80/TCP UNHEALTHY",
			}},
		},
		{
			name: "groups by priority then zone",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", zone("b")),
					ep("10.0.0.2", zone("a")),
					ep("10.0.0.3"),
					ep("10.0.0.4", zone("a"), terminating),
					ep("10.0.0.5", zone("a")),
				),
				v4("b", http80, ep("10.0.0.6", zone("b"))),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.3:80/TCP HEALTHY",
				"p0 zone=a 10.0.0.2:80/TCP HEALTHY",
				"p0 zone=a 10.0.0.5:80/TCP HEALTHY",
				"p0 zone=b 10.0.0.1:80/TCP HEALTHY",
				"p0 zone=b 10.0.0.6:80/TCP HEALTHY",
				"p1 zone=a 10.0.0.4:80/TCP HEALTHY",
			}},
		},
		{
			name: "unnamed port: the empty name; a nil name or protocol is skipped, as kube-proxy does",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", ports(discoveryv1.EndpointPort{Port: ptr[int32](80), Protocol: ptr(corev1.ProtocolTCP)}), ep("10.0.0.1")),
				v4("b", ports(tcp("", 80)), ep("10.0.0.2")),
				v4("c", ports(discoveryv1.EndpointPort{Name: ptr(""), Port: ptr[int32](80)}), ep("10.0.0.3")),
			},
			want: map[string][]string{"ns/svc": {
				"p0 zone= 10.0.0.2:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{IncompletePorts: 2},
		},
		{
			name: "UDP and explicit TCP carry into the socket address",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", ports(
					withProto(tcp("dns", 53), corev1.ProtocolUDP),
					withProto(tcp("dns-tcp", 53), corev1.ProtocolTCP),
				), ep("10.0.0.1")),
			},
			want: map[string][]string{
				"ns/svc/dns":     {"p0 zone= 10.0.0.1:53/UDP HEALTHY"},
				"ns/svc/dns-tcp": {"p0 zone= 10.0.0.1:53/TCP HEALTHY"},
			},
		},
		{
			name: "one port name with two protocols: the newest slice's protocol wins",
			slices: []*discoveryv1.EndpointSlice{
				created(v4("old", ports(tcp("dns", 53)), ep("10.0.0.1"), ep("10.0.0.2")), 100),
				created(v4("new", ports(withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("10.0.0.3")), 200),
			},
			want:    map[string][]string{"ns/svc/dns": {"p0 zone= 10.0.0.3:53/UDP HEALTHY"}},
			skipped: translate.SkipCounts{MixedProtocolPorts: 1},
		},
		{
			name: "one port name with two protocols, created the same second: more endpoints win",
			slices: []*discoveryv1.EndpointSlice{
				created(v4("a", ports(tcp("dns", 53)), ep("10.0.0.1")), 100),
				created(v4("b", ports(withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("10.0.0.2"), ep("10.0.0.3"), ep("10.0.0.5")), 100),
				created(v4("c", ports(tcp("dns", 53), tcp("http", 80)), ep("10.0.0.4")), 50),
			},
			want: map[string][]string{
				"ns/svc/dns":  {"p0 zone= 10.0.0.2:53/UDP HEALTHY", "p0 zone= 10.0.0.3:53/UDP HEALTHY", "p0 zone= 10.0.0.5:53/UDP HEALTHY"},
				"ns/svc/http": {"p0 zone= 10.0.0.4:80/TCP HEALTHY"},
			},
			skipped: translate.SkipCounts{MixedProtocolPorts: 2},
		},
		{
			name: "one port name with two protocols, a full tie: TCP",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", ports(withProto(tcp("dns", 53), corev1.ProtocolUDP)), ep("10.0.0.1")),
				v4("b", ports(tcp("dns", 53)), ep("10.0.0.1")),
			},
			want:    map[string][]string{"ns/svc/dns": {"p0 zone= 10.0.0.1:53/TCP HEALTHY"}},
			skipped: translate.SkipCounts{MixedProtocolPorts: 1},
		},
		{
			name: "hostname: the endpoint's own, never the pod name",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", pod("web-0"), hostname("web-0")),
					ep("10.0.0.2", pod("web-1")),
					ep("10.0.0.3", hostname("mirrored")),
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY host=web-0 pod=ns/web-0",
				"p0 zone= 10.0.0.2:80/TCP HEALTHY pod=ns/web-1",
				"p0 zone= 10.0.0.3:80/TCP HEALTHY host=mirrored",
			}},
		},
		{
			name: "region from the node, under NodeRegion: one group per (priority, region, zone)",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", zone("a"), node("n1")),
					ep("10.0.0.2", zone("a"), node("n2")),
					ep("10.0.0.3", zone("a"), node("n1")),
					ep("10.0.0.4", zone("a"), node("unknown")),
					ep("10.0.0.5", zone("a")),
					ep("10.0.0.6", zone("a"), node("n2"), terminating),
				),
			},
			opts: translate.Options{NodeRegion: func(node string) string {
				return map[string]string{"n1": "r1", "n2": "r2"}[node]
			}},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone=a 10.0.0.4:80/TCP HEALTHY node=unknown",
				"p0 zone=a 10.0.0.5:80/TCP HEALTHY",
				"p0 region=r1 zone=a 10.0.0.1:80/TCP HEALTHY node=n1",
				"p0 region=r1 zone=a 10.0.0.3:80/TCP HEALTHY node=n1",
				"p0 region=r2 zone=a 10.0.0.2:80/TCP HEALTHY node=n2",
				"p1 region=r2 zone=a 10.0.0.6:80/TCP HEALTHY node=n2",
			}},
		},
		{
			name: "region: without NodeRegion, none",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.1", zone("a"), node("n1"))),
			},
			want: map[string][]string{"ns/svc/http": {"p0 zone=a 10.0.0.1:80/TCP HEALTHY node=n1"}},
		},
		{
			name: "SCTP ports are skipped",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", ports(withProto(tcp("sig", 3868), corev1.ProtocolSCTP), tcp("http", 80)), ep("10.0.0.1")),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.1:80/TCP HEALTHY"}},
			skipped: translate.SkipCounts{SCTPPorts: 1},
		},
		{
			name:   "no slices: no CLAs",
			slices: nil,
			want:   map[string][]string{},
		},
		{
			name:   "placeholder slice without ports or endpoints: no CLAs",
			slices: []*discoveryv1.EndpointSlice{v4("a", nil)},
			want:   map[string][]string{},
		},
		{
			name:   "ports but no endpoints: empty CLA",
			slices: []*discoveryv1.EndpointSlice{v4("a", http80)},
			want:   map[string][]string{"ns/svc/http": nil},
		},
		{
			name: "nil conditions: ready; nil serving counts as serving",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", nilConds),
					ep("10.0.0.2", conds(no, nil, yes)),
					ep("10.0.0.3", conds(no, nil, nil)),
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY",
				"p1 zone= 10.0.0.2:80/TCP HEALTHY",
			}},
			skipped: translate.SkipCounts{UnreadyEndpoints: 1},
		},
		{
			name: "only addresses[0] is used",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80, ep("10.0.0.2", func(e *discoveryv1.Endpoint) {
					e.Addresses = append(e.Addresses, "10.0.0.1")
				})),
			},
			want: map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.2:80/TCP HEALTHY"}},
		},
		{
			name: "pod and node reach metadata; non-Pod targetRefs do not",
			slices: []*discoveryv1.EndpointSlice{
				v4("a", http80,
					ep("10.0.0.1", pod("web-1"), node("n1")),
					ep("10.0.0.2", node("n2")),
					ep("10.0.0.3", func(e *discoveryv1.Endpoint) {
						e.TargetRef = &corev1.ObjectReference{Kind: "Node", Name: "n3"}
					}),
					ep("10.0.0.4", func(e *discoveryv1.Endpoint) {
						e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-4"} // namespace defaults to the Service's
					}),
				),
			},
			want: map[string][]string{"ns/svc/http": {
				"p0 zone= 10.0.0.1:80/TCP HEALTHY pod=ns/web-1 node=n1",
				"p0 zone= 10.0.0.2:80/TCP HEALTHY node=n2",
				"p0 zone= 10.0.0.3:80/TCP HEALTHY",
				"p0 zone= 10.0.0.4:80/TCP HEALTHY pod=ns/web-4",
			}},
		},
		{
			name: "slices of other services are ignored",
			slices: []*discoveryv1.EndpointSlice{
				func() *discoveryv1.EndpointSlice {
					s := v4("other-ns", http80, ep("10.0.0.1"))
					s.Namespace = "other"
					return s
				}(),
				func() *discoveryv1.EndpointSlice {
					s := v4("other-svc", http80, ep("10.0.0.2"))
					s.Labels[translate.ServiceNameLabel] = "other"
					return s
				}(),
				func() *discoveryv1.EndpointSlice {
					s := v4("unlabelled", http80, ep("10.0.0.3"))
					s.Labels = nil
					return s
				}(),
				v4("mine", http80, ep("10.0.0.4")),
			},
			want:    map[string][]string{"ns/svc/http": {"p0 zone= 10.0.0.4:80/TCP HEALTHY"}},
			skipped: translate.SkipCounts{ForeignSlices: 3},
		},
		{
			name:      "unusable service key matches nothing, not even unlabelled slices",
			namespace: "ns",
			service:   "",
			slices: []*discoveryv1.EndpointSlice{
				func() *discoveryv1.EndpointSlice {
					s := v4("unlabelled", http80, ep("10.0.0.3"))
					s.Labels = nil
					return s
				}(),
			},
			want:    map[string][]string{},
			skipped: translate.SkipCounts{ForeignSlices: 1},
		},
		{
			name: "malformed input is skipped and counted",
			slices: []*discoveryv1.EndpointSlice{
				nil,
				slice("bad-type", "IPv5", http80, ep("10.0.0.1")),
				v4("bad-ports", ports(
					discoveryv1.EndpointPort{Name: ptr("all"), Protocol: ptr(corev1.ProtocolTCP)},     // nil number: all ports
					discoveryv1.EndpointPort{Name: ptr("noproto"), Port: ptr[int32](82)},              // nil protocol
					discoveryv1.EndpointPort{Port: ptr[int32](83), Protocol: ptr(corev1.ProtocolTCP)}, // nil name
					tcp("zero", 0),
					tcp("neg", -1),
					tcp("big", 65536),
					withProto(tcp("icmp", 1), "ICMP"),
					withProto(tcp("empty-proto", 1), ""),
					tcp("bad-\xff", 81),
					tcp("max", 65535),
				), ep("10.0.0.1")),
				v4("bad-eps", http80,
					discoveryv1.Endpoint{}, // no address
					discoveryv1.Endpoint{Addresses: []string{}},
					ep(""),
					ep("not-an-ip"),
					ep("0x0a.0.0.1"), // hex: kube-proxy's parser takes decimal only
					ep("10.0.0.1 "),
					ep("fd00::1"),                // IPv6 in an IPv4 slice
					ep("10.0.0.2", zone("\xff")), // proto3 strings must be UTF-8
					ep("10.0.0.3", node("n\xc0")),
					ep("10.0.0.4", pod("\xfe")),
					ep("10.0.0.5"),
				),
				v6("bad-v6", http80,
					ep("10.0.0.6"),        // IPv4 in an IPv6 slice
					ep("::ffff:10.0.0.7"), // IPv4-mapped
					ep("fe80::1%eth0"),    // zoned
					ep("fd00::2"),
				),
			},
			want: map[string][]string{
				"ns/svc/http": {"p0 zone= 10.0.0.5:80/TCP HEALTHY", "p0 zone= [fd00::2]:80/TCP HEALTHY"},
				"ns/svc/max":  {"p0 zone= 10.0.0.1:65535/TCP HEALTHY"},
			},
			skipped: translate.SkipCounts{
				InvalidSlices:    2,
				UnnumberedPorts:  1,
				IncompletePorts:  2,
				InvalidPorts:     6,
				InvalidEndpoints: 13,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, svc := testNS, testSvc
			if tt.namespace != "" || tt.service != "" {
				ns, svc = tt.namespace, tt.service
			}
			before := deepCopyAll(tt.slices)
			res := translate.Service(ns, svc, tt.slices, tt.opts)
			checkResult(t, ns, svc, res)
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
		})
	}
}

func render(m map[string][]string) string {
	var b strings.Builder
	for name, lines := range m {
		b.WriteString("\n  " + name + ":")
		if lines == nil {
			b.WriteString(" (no endpoints)")
		}
		for _, l := range lines {
			b.WriteString("\n    " + l)
		}
	}
	return b.String()
}

// TestServiceExactCLA pins the full shape of one CLA, including what
// summarize does not show: Hostname, metadata layout, Locality.
func TestServiceExactCLA(t *testing.T) {
	res := translate.Service(testNS, testSvc, []*discoveryv1.EndpointSlice{
		v4("a", ports(tcp("http", 8080)), ep("10.0.0.1", pod("web-1"), node("n1"), zone("z1"), hostname("web-1"))),
	}, translate.Options{NodeRegion: func(string) string { return "r1" }})

	want := &endpointv3.ClusterLoadAssignment{
		ClusterName: "ns/svc/http",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: "r1", Zone: "z1"},
			Priority:            0,
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Protocol:      corev3.SocketAddress_TCP,
						Address:       "10.0.0.1",
						PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
					}}},
					Hostname: "web-1",
				}},
				HealthStatus: corev3.HealthStatus_HEALTHY,
				Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"deltaeds": {Fields: map[string]*structpb.Value{
						"pod":       structpb.NewStringValue("web-1"),
						"namespace": structpb.NewStringValue("ns"),
						"node":      structpb.NewStringValue("n1"),
					}},
				}},
			}},
		}},
	}
	if len(res.CLAs) != 1 || !proto.Equal(res.CLAs[0], want) {
		t.Fatalf("got %v\nwant %v", res.CLAs, want)
	}
}

// TestServiceDeterministic checks the property the store relies on: equal
// input in any order gives byte-identical CLAs.
func TestServiceDeterministic(t *testing.T) {
	var in []*discoveryv1.EndpointSlice
	http := ports(tcp("http", 80), withProto(tcp("dns", 53), corev1.ProtocolUDP))
	for s := range 6 {
		at, format := discoveryv1.AddressTypeIPv4, "10.0.0.%d"
		if s%2 == 1 {
			at, format = discoveryv1.AddressTypeIPv6, "fd00::%d"
		}
		var eps []discoveryv1.Endpoint
		for i := range 20 {
			// Slices of one family overlap by 5 endpoints, whose copies
			// differ in zone, pod and conditions.
			n := s/2*15 + i
			opts := []epOpt{zone([]string{"a", "b", ""}[(n+s)%3]), pod(fmt.Sprintf("p%d-%d", s, n)), node("n")}
			switch (n + s) % 5 {
			case 1:
				opts = append(opts, terminating)
			case 2:
				opts = append(opts, starting)
			}
			eps = append(eps, ep(fmt.Sprintf(format, n), opts...))
		}
		in = append(in, slice(fmt.Sprintf("s%d", s), at, http, eps...), nil)
	}

	for _, opts := range []translate.Options{{}, {IncludeUnready: true}} {
		want := translate.Service(testNS, testSvc, in, opts)
		checkResult(t, testNS, testSvc, want)
		if want.Skipped.DuplicateEndpoints == 0 {
			t.Fatal("input has no duplicates; the test would prove little")
		}
		wantBytes := marshalAll(t, want)
		rng := rand.New(rand.NewPCG(1, 2))
		for range 50 {
			got := translate.Service(testNS, testSvc, shuffled(rng, in), opts)
			if got.Skipped != want.Skipped {
				t.Fatalf("Skipped differs after shuffle: %+v vs %+v", got.Skipped, want.Skipped)
			}
			gotBytes := marshalAll(t, got)
			if len(gotBytes) != len(wantBytes) {
				t.Fatalf("%d CLAs after shuffle, want %d", len(gotBytes), len(wantBytes))
			}
			for i := range gotBytes {
				if !bytes.Equal(gotBytes[i], wantBytes[i]) {
					t.Fatalf("CLA %q differs after shuffle", got.CLAs[i].GetClusterName())
				}
			}
		}
	}
}

func TestClusterName(t *testing.T) {
	tests := []struct {
		ns, svc, port, want string
	}{
		{"ns", "svc", "http", "ns/svc/http"},
		{"ns", "svc", "", "ns/svc"},
	}
	for _, tt := range tests {
		if got := translate.ClusterName(tt.ns, tt.svc, tt.port); got != tt.want {
			t.Errorf("ClusterName(%q, %q, %q) = %q, want %q", tt.ns, tt.svc, tt.port, got, tt.want)
		}
	}
}

func TestParseClusterName(t *testing.T) {
	tests := []struct {
		name          string
		ns, svc, port string
		ok            bool
	}{
		{"ns/svc/http", "ns", "svc", "http", true},
		{"ns/svc", "ns", "svc", "", true},
		{"ns/svc/a/b", "ns", "svc", "a/b", true}, // only namespace and service are split
		{"ns/svc/", "", "", "", false},           // would alias "ns/svc"
		{"ns", "", "", "", false},
		{"", "", "", "", false},
		{"/svc", "", "", "", false},
		{"ns/", "", "", "", false},
		{"ns//http", "", "", "", false},
	}
	for _, tt := range tests {
		ns, svc, port, ok := translate.ParseClusterName(tt.name)
		if ns != tt.ns || svc != tt.svc || port != tt.port || ok != tt.ok {
			t.Errorf("ParseClusterName(%q) = %q, %q, %q, %v; want %q, %q, %q, %v",
				tt.name, ns, svc, port, ok, tt.ns, tt.svc, tt.port, tt.ok)
		}
		if ok && translate.ClusterName(ns, svc, port) != tt.name {
			t.Errorf("ClusterName(ParseClusterName(%q)) = %q", tt.name, translate.ClusterName(ns, svc, port))
		}
	}
}

func TestEmptyCLA(t *testing.T) {
	cla := translate.EmptyCLA("ns/svc/http")
	if err := cla.Validate(); err != nil {
		t.Fatal(err)
	}
	if cla.GetClusterName() != "ns/svc/http" || len(cla.GetEndpoints()) != 0 {
		t.Fatalf("EmptyCLA = %v", cla)
	}
	// What Service returns for a port with no endpoints left is the same
	// resource, so the caller's bookkeeping cannot make them differ.
	res := translate.Service(testNS, testSvc, []*discoveryv1.EndpointSlice{v4("a", ports(tcp("http", 80)))}, translate.Options{})
	if len(res.CLAs) != 1 || !proto.Equal(res.CLAs[0], cla) {
		t.Fatalf("Service with an endpointless port = %v, want %v", res.CLAs, cla)
	}
}

// TestImports guards the package contract in doc.go: no I/O, no logging, no
// gRPC or informers, no other deltaeds package.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{
		"google.golang.org/grpc", "k8s.io/client-go", "github.com/deltaeds/deltaeds/",
		"go.uber.org/zap", "log", "os", "io", "net/http", "time", "sync",
	}
	for _, imp := range pkg.Imports {
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("translate imports %q", imp)
			}
		}
	}
}
