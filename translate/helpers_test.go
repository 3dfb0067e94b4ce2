package translate_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/translate"
)

const (
	testNS  = "ns"
	testSvc = "svc"
)

func ptr[T any](v T) *T { return &v }

// slice builds an EndpointSlice of testNS/testSvc.
func slice(name string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS,
			Name:      name,
			Labels:    map[string]string{translate.ServiceNameLabel: testSvc},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func v4(name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return slice(name, discoveryv1.AddressTypeIPv4, ports, eps...)
}

func v6(name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return slice(name, discoveryv1.AddressTypeIPv6, ports, eps...)
}

// tcp is a named TCP port, as the API server stores it (it defaults a nil
// protocol to TCP).
func tcp(name string, n int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(n), Protocol: ptr(corev1.ProtocolTCP)}
}

func withProto(p discoveryv1.EndpointPort, proto corev1.Protocol) discoveryv1.EndpointPort {
	p.Protocol = &proto
	return p
}

func ports(p ...discoveryv1.EndpointPort) []discoveryv1.EndpointPort { return p }

type epOpt func(*discoveryv1.Endpoint)

// ep is an endpoint with explicit ready conditions unless opts change them.
func ep(addr string, opts ...epOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func conds(ready, serving, terminating *bool) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.Conditions = discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
	}
}

var (
	yes = ptr(true)
	no  = ptr(false)

	terminating = conds(no, yes, yes)  // still serving while shutting down
	notServing  = conds(no, no, yes)   // shut down, not serving any more
	starting    = conds(no, no, no)    // not ready yet
	nilConds    = conds(nil, nil, nil) // an old or third-party controller
)

func hostname(h string) epOpt { return func(e *discoveryv1.Endpoint) { e.Hostname = &h } }
func zone(z string) epOpt     { return func(e *discoveryv1.Endpoint) { e.Zone = &z } }
func node(n string) epOpt     { return func(e *discoveryv1.Endpoint) { e.NodeName = &n } }
func pod(name string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: name}
	}
}

// created sets a slice's creation time, in seconds since the epoch.
func created(s *discoveryv1.EndpointSlice, unix int64) *discoveryv1.EndpointSlice {
	s.CreationTimestamp = metav1.Unix(unix, 0)
	return s
}

// summarize renders a CLA one line per endpoint, in output order, with what
// the rules are about: priority, zone, socket, health, additional addresses
// (" +addr") and identity. An empty group shows as "(empty)".
func summarize(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, g := range cla.GetEndpoints() {
		prefix := fmt.Sprintf("p%d zone=%s", g.GetPriority(), g.GetLocality().GetZone())
		if r := g.GetLocality().GetRegion(); r != "" {
			prefix = fmt.Sprintf("p%d region=%s zone=%s", g.GetPriority(), r, g.GetLocality().GetZone())
		}
		if len(g.GetLbEndpoints()) == 0 {
			out = append(out, prefix+" (empty)")
		}
		for _, lb := range g.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			line := fmt.Sprintf("%s %s/%s %s", prefix,
				net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
				sa.GetProtocol(), lb.GetHealthStatus())
			if h := lb.GetEndpoint().GetHostname(); h != "" {
				line += " host=" + h
			}
			for _, aa := range lb.GetEndpoint().GetAdditionalAddresses() {
				line += " +" + aa.GetAddress().GetSocketAddress().GetAddress()
			}
			f := lb.GetMetadata().GetFilterMetadata()[translate.MetadataKey].GetFields()
			if p := f[translate.MetadataPod].GetStringValue(); p != "" {
				line += " pod=" + f[translate.MetadataNamespace].GetStringValue() + "/" + p
			}
			if n := f[translate.MetadataNode].GetStringValue(); n != "" {
				line += " node=" + n
			}
			out = append(out, line)
		}
	}
	return out
}

// checkResult asserts the invariants every Result must hold whatever the
// input: valid, marshalable CLAs named after the Service, sorted, with
// priorities from 0 without gaps, groups and endpoints strictly ordered, no
// address:port twice (additional addresses included), each additional
// address of the other family on the same port and protocol, one protocol,
// health matching priority, localities weighted by their endpoint counts.
func checkResult(t testing.TB, namespace, service string, res translate.Result) {
	t.Helper()
	for i, cla := range res.CLAs {
		name := cla.GetClusterName()
		if err := cla.Validate(); err != nil {
			t.Fatalf("CLA %q fails Validate: %v", name, err)
		}
		if _, err := (proto.MarshalOptions{Deterministic: true}).Marshal(cla); err != nil {
			t.Fatalf("CLA %q does not marshal: %v", name, err)
		}
		if i > 0 && res.CLAs[i-1].GetClusterName() >= name {
			t.Fatalf("CLAs not strictly sorted: %q then %q", res.CLAs[i-1].GetClusterName(), name)
		}
		ns, svc, port, ok := translate.ParseClusterName(name)
		if !ok || ns != namespace || svc != service || translate.ClusterName(ns, svc, port) != name {
			t.Fatalf("CLA name %q does not parse back to %s/%s (got %q %q %q %v)", name, namespace, service, ns, svc, port, ok)
		}

		type key struct {
			addr  netip.Addr
			port  uint32
			proto corev3.SocketAddress_Protocol
		}
		seen := map[key]bool{}
		var prevPrio uint32
		var prevRegion, prevZone string
		protos := map[corev3.SocketAddress_Protocol]bool{}
		unhealthyAt := -1 // the priority of the unready endpoints, once seen
		for gi, g := range cla.GetEndpoints() {
			prio, r, z := g.GetPriority(), g.GetLocality().GetRegion(), g.GetLocality().GetZone()
			if gi == 0 && prio != 0 {
				t.Fatalf("CLA %q: first group at priority %d, want 0", name, prio)
			}
			if gi > 0 {
				if c := cmp.Or(cmp.Compare(prevPrio, prio), cmp.Compare(prevRegion, r), cmp.Compare(prevZone, z)); c >= 0 {
					t.Fatalf("CLA %q: groups not strictly sorted by (priority, region, zone): (%d,%q,%q) then (%d,%q,%q)", name, prevPrio, prevRegion, prevZone, prio, r, z)
				}
				if prio > prevPrio+1 {
					t.Fatalf("CLA %q: priority gap %d -> %d", name, prevPrio, prio)
				}
			}
			prevPrio, prevRegion, prevZone = prio, r, z
			// Envoy's locality-weighted balancing gives an unweighted
			// locality nothing: every non-empty group weighs its endpoints.
			if n, w := len(g.GetLbEndpoints()), g.GetLoadBalancingWeight(); (n == 0) != (w == nil) || (w != nil && w.GetValue() != uint32(n)) {
				t.Fatalf("CLA %q: group of %d endpoints has locality weight %v", name, n, w)
			}
			var prev key
			for ei, lb := range g.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				addr, err := netip.ParseAddr(sa.GetAddress())
				if err != nil || addr.String() != sa.GetAddress() {
					t.Fatalf("CLA %q: address %q not canonical (%v)", name, sa.GetAddress(), err)
				}
				k := key{addr, sa.GetPortValue(), sa.GetProtocol()}
				if k.port == 0 {
					t.Fatalf("CLA %q: port 0", name)
				}
				if seen[k] {
					t.Fatalf("CLA %q: %v twice", name, k)
				}
				seen[k] = true
				if ei > 0 {
					c := cmp.Or(prev.addr.Compare(k.addr), cmp.Compare(prev.port, k.port), cmp.Compare(prev.proto, k.proto))
					if c >= 0 {
						t.Fatalf("CLA %q: endpoints not sorted: %v then %v", name, prev, k)
					}
				}
				prev = k
				extra := lb.GetEndpoint().GetAdditionalAddresses()
				if len(extra) > 1 {
					t.Fatalf("CLA %q: %v has %d additional addresses, want at most 1", name, k, len(extra))
				}
				for _, aa := range extra {
					xs := aa.GetAddress().GetSocketAddress()
					x, err := netip.ParseAddr(xs.GetAddress())
					if err != nil || x.String() != xs.GetAddress() {
						t.Fatalf("CLA %q: additional address %q not canonical (%v)", name, xs.GetAddress(), err)
					}
					if x.Is4() == k.addr.Is4() || !k.addr.Is4() {
						t.Fatalf("CLA %q: additional address %v of %v: want IPv6 after an IPv4 address", name, x, k.addr)
					}
					if xs.GetPortValue() != k.port || xs.GetProtocol() != k.proto {
						t.Fatalf("CLA %q: additional address of %v on %d/%v", name, k, xs.GetPortValue(), xs.GetProtocol())
					}
					xk := key{x, k.port, k.proto}
					if seen[xk] {
						t.Fatalf("CLA %q: %v twice", name, xk)
					}
					seen[xk] = true
				}
				if protos[k.proto] = true; len(protos) > 1 {
					t.Fatalf("CLA %q mixes protocols", name)
				}
				// Unready endpoints sit in the last priority, after the
				// terminating fallback (PriorityUnready in the plain CLA, later
				// in a Topology variant), alone, never where they would lower
				// the health of a priority that carries traffic.
				switch h := lb.GetHealthStatus(); {
				case h == corev3.HealthStatus_HEALTHY && (unhealthyAt < 0 || prio < uint32(unhealthyAt)):
				case h == corev3.HealthStatus_UNHEALTHY && (unhealthyAt < 0 || prio == uint32(unhealthyAt)) && prio >= translate.PriorityUnready:
					unhealthyAt = int(prio)
				default:
					t.Fatalf("CLA %q: %v at priority %d", name, h, prio)
				}
			}
		}
	}
}

// marshalAll returns each CLA's deterministic encoding, the bytes the store
// hashes into a version.
func marshalAll(t testing.TB, res translate.Result) [][]byte {
	t.Helper()
	out := make([][]byte, len(res.CLAs))
	for i, cla := range res.CLAs {
		b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(cla)
		if err != nil {
			t.Fatalf("marshal %q: %v", cla.GetClusterName(), err)
		}
		out[i] = b
	}
	return out
}

// shuffled returns a deep copy of in with slices, and the endpoints and ports
// of each, in another order. The input is left alone.
func shuffled(rng *rand.Rand, in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := make([]*discoveryv1.EndpointSlice, len(in))
	for i, s := range in {
		out[i] = s.DeepCopy() // nil stays nil
		if out[i] == nil {
			continue
		}
		rng.Shuffle(len(out[i].Endpoints), func(a, b int) {
			out[i].Endpoints[a], out[i].Endpoints[b] = out[i].Endpoints[b], out[i].Endpoints[a]
		})
		rng.Shuffle(len(out[i].Ports), func(a, b int) {
			out[i].Ports[a], out[i].Ports[b] = out[i].Ports[b], out[i].Ports[a]
		})
	}
	rng.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	return out
}

func deepCopyAll(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	if in == nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, len(in))
	for i, s := range in {
		out[i] = s.DeepCopy()
	}
	return out
}
