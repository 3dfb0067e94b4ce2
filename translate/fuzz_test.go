package translate_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/translate"
)

// fuzzReader hands out fuzz bytes; past the end it returns zeros, so every
// input decodes to something and short inputs mean small Services.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fuzzReader) choice(n int) int { return int(r.next()) % n }

// raw returns up to 7 arbitrary bytes: invalid UTF-8, slashes and the like.
func (r *fuzzReader) raw() string {
	n := r.choice(8)
	if n > len(r.b) {
		n = len(r.b)
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *fuzzReader) tri() *bool {
	switch r.choice(3) {
	case 1:
		return ptr(true)
	case 2:
		return ptr(false)
	}
	return nil
}

// decodeFuzz builds options, a shuffle seed and the slices of testNS/testSvc
// from fuzz bytes. Most choices pick from small pools so that duplicates,
// shared port names and foreign slices are frequent; a few take raw bytes.
// Layout (one byte each unless noted):
//
//	flags (bit 0: IncludeUnready, bit 1: NodeRegion, bit 2:
//	InternalTrafficLocal, bits 3-4: Family, 3 meaning dual too, rest:
//	shuffle seed),
//	slice count
//	per slice: present (0 = nil), namespace, label, address type, port count,
//	  per port: name, protocol, number (+2 bytes for a free number),
//	  endpoint count,
//	  per endpoint: address count, per address: kind (+1 byte for most kinds),
//	    ready, serving, terminating, zone, node, targetRef (+1 byte for most pods),
//	    hostname, zone hints, node hints,
//	  creation second
func decodeFuzz(data []byte) (translate.Options, uint64, []*discoveryv1.EndpointSlice) {
	r := &fuzzReader{b: data}
	flags := r.next()
	opts := translate.Options{IncludeUnready: flags&1 == 1}
	if flags&2 == 2 {
		opts.NodeRegion = fuzzRegion
	}
	opts.InternalTrafficLocal = flags&4 == 4
	opts.Family = translate.IPFamily((flags >> 3 & 3) % 3)
	seed := uint64(flags >> 5)

	var out []*discoveryv1.EndpointSlice
	for n := r.choice(7); n > 0; n-- {
		if r.next()%8 == 0 {
			out = append(out, nil)
			continue
		}
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", len(out))}}
		switch r.choice(4) {
		case 0, 1:
			s.Namespace = testNS
		case 2:
			s.Namespace = "other"
		case 3:
			s.Namespace = r.raw()
		}
		switch r.choice(5) {
		case 0, 1:
			s.Labels = map[string]string{translate.ServiceNameLabel: testSvc}
		case 2:
			s.Labels = map[string]string{translate.ServiceNameLabel: "other"}
		case 3: // unlabelled
		case 4:
			s.Labels = map[string]string{translate.ServiceNameLabel: r.raw()}
		}
		switch r.choice(5) {
		case 0:
			s.AddressType = discoveryv1.AddressTypeIPv4
		case 1:
			s.AddressType = discoveryv1.AddressTypeIPv6
		case 2:
			s.AddressType = discoveryv1.AddressTypeFQDN
		case 3: // empty
		case 4:
			s.AddressType = discoveryv1.AddressType(r.raw())
		}
		for n := r.choice(4); n > 0; n-- {
			s.Ports = append(s.Ports, decodePort(r))
		}
		for n := r.choice(8); n > 0; n-- {
			s.Endpoints = append(s.Endpoints, decodeEndpoint(r))
		}
		// Few distinct seconds, so that protocol votes tie often.
		s.CreationTimestamp = metav1.Unix(int64(r.choice(3)), 0)
		out = append(out, s)
	}
	return opts, seed, out
}

func decodePort(r *fuzzReader) discoveryv1.EndpointPort {
	var p discoveryv1.EndpointPort
	switch r.choice(6) {
	case 0, 1:
		p.Name = ptr("")
	case 2:
		p.Name = ptr("http")
	case 3:
		p.Name = ptr("grpc")
	case 4:
		p.Name = ptr(r.raw())
	case 5: // nil
	}
	switch r.choice(6) {
	case 0, 1:
		p.Protocol = ptr(corev1.ProtocolTCP)
	case 2:
		p.Protocol = ptr(corev1.ProtocolUDP)
	case 3:
		p.Protocol = ptr(corev1.ProtocolSCTP)
	case 4:
		p.Protocol = ptr(corev1.Protocol("bogus"))
	case 5: // nil
	}
	switch r.choice(8) {
	case 1:
		p.Port = ptr[int32](80)
	case 2:
		p.Port = ptr[int32](8080)
	case 3:
		p.Port = ptr[int32](0)
	case 4:
		p.Port = ptr[int32](-1)
	case 5:
		p.Port = ptr[int32](65535)
	case 6:
		p.Port = ptr[int32](65536)
	case 7:
		p.Port = ptr(int32(r.next())<<9 | int32(r.next()))
	}
	return p
}

func decodeEndpoint(r *fuzzReader) discoveryv1.Endpoint {
	var e discoveryv1.Endpoint
	for n := r.choice(3); n > 0; n-- {
		var a string
		switch r.choice(8) {
		case 0:
			a = fmt.Sprintf("10.0.0.%d", r.choice(8))
		case 1:
			a = fmt.Sprintf("fd00::%x", r.choice(8))
		case 2:
			a = fmt.Sprintf("::ffff:10.0.0.%d", r.choice(8))
		case 3:
			a = "fe80::1%eth0"
		case 4:
			a = "bogus"
		case 5: // empty
		case 6:
			a = r.raw()
		case 7:
			a = fmt.Sprintf("fd00:0:0::%x", r.choice(8)) // non-canonical
		}
		e.Addresses = append(e.Addresses, a)
	}
	e.Conditions = discoveryv1.EndpointConditions{Ready: r.tri(), Serving: r.tri(), Terminating: r.tri()}
	switch r.choice(5) {
	case 1:
		e.Zone = ptr("")
	case 2:
		e.Zone = ptr("a")
	case 3:
		e.Zone = ptr("b")
	case 4:
		e.Zone = ptr(r.raw())
	}
	switch r.choice(4) {
	case 1:
		e.NodeName = ptr("n1")
	case 2:
		e.NodeName = ptr("n2")
	case 3:
		e.NodeName = ptr(r.raw())
	}
	switch r.choice(8) {
	case 1:
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("p%d", r.choice(4))}
	case 6: // as the EndpointSlice controller writes it
		n := r.choice(4)
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: fmt.Sprintf("p%d", n), UID: types.UID(fmt.Sprintf("u%d", n))}
	case 7: // the same pod re-created
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: fmt.Sprintf("p%d", r.choice(4)), UID: "new"}
	case 2:
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod"}
	case 3:
		e.TargetRef = &corev1.ObjectReference{Kind: "Node", Name: "n1"}
	case 4:
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "other", Name: "p1"}
	case 5:
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: r.raw()}
	}
	switch r.choice(4) {
	case 1:
		e.Hostname = ptr("h1")
	case 2:
		e.Hostname = ptr("h2")
	case 3:
		e.Hostname = ptr(r.raw())
	}
	pick := func() string { return []string{"a", "b", "n1", "n2"}[r.choice(4)] }
	if n := r.choice(3); n > 0 {
		e.Hints = &discoveryv1.EndpointHints{}
		for ; n > 0; n-- {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: pick()})
		}
	}
	for n := r.choice(3); n > 0; n-- {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: pick()})
	}
	return e
}

// fuzzViews are the client places the fuzz target builds variants for.
var fuzzViews = []translate.View{{}, {Zone: "a"}, {Node: "n1"}, {Zone: "a", Node: "n1"}, {Zone: "b", Node: "n2"}}

// fuzzRegion is the NodeRegion of the fuzz target: two known nodes, one of
// them in a region that is not UTF-8, every other node unknown.
func fuzzRegion(node string) string {
	switch node {
	case "n1":
		return "r1"
	case "n2":
		return "r\xff"
	}
	return ""
}

func FuzzService(f *testing.F) {
	f.Add([]byte{}) // no slices

	// One IPv4 slice, port http/80, two ready endpoints in zones a and b.
	f.Add([]byte{
		0, 1, // defaults, one slice
		1, 0, 0, 0, 1, // present, ns, svc label, IPv4, one port
		2, 0, 1, // "http", nil protocol, 80
		2,                            // two endpoints
		1, 0, 1, 1, 1, 2, 2, 1, 1, 1, // 10.0.0.1 ready, zone a, n1, pod p1
		1, 0, 2, 1, 1, 2, 3, 2, 0, // 10.0.0.2 ready, zone b, n2
	})

	// The same address in two slices with different port numbers and
	// conditions, with IncludeUnready: duplicates, fallback, UNHEALTHY.
	f.Add([]byte{
		1, 2,
		1, 0, 0, 0, 1, 2, 0, 1, // IPv4, http/80
		3,
		1, 0, 1, 2, 1, 1, 2, 0, 0, // 10.0.0.1 terminating, zone a
		1, 0, 1, 1, 1, 2, 3, 0, 0, // 10.0.0.1 ready, zone b
		1, 0, 3, 2, 2, 2, 0, 0, 0, // 10.0.0.3 not serving
		1, 0, 0, 0, 1, 2, 0, 2, // IPv4, http/8080
		2,
		1, 0, 1, 0, 0, 0, 0, 0, 0, // 10.0.0.1, nil conditions
		1, 0, 2, 2, 0, 1, 0, 0, 0, // 10.0.0.2 not ready, nil serving, terminating
	})

	// Dual-stack, with a non-canonical IPv6 duplicate and an IPv4-mapped one.
	f.Add([]byte{
		0, 2,
		1, 0, 0, 1, 1, 1, 2, 1, // IPv6, unnamed UDP/80
		3,
		1, 7, 1, 0, 0, 0, 0, 0, 0, // fd00:0:0::1
		1, 1, 1, 0, 0, 0, 0, 0, 0, // fd00::1
		1, 2, 1, 0, 0, 0, 0, 0, 0, // ::ffff:10.0.0.1
		1, 0, 0, 0, 1, 1, 2, 1, // IPv4, unnamed UDP/80
		1,
		2, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, // 10.0.0.1 (and 10.0.0.2, ignored)
	})

	// Dual-stack pods as the controller writes them: p1 and p2 in an IPv4
	// and an IPv6 slice, p3 in IPv6 only, p1's IPv6 copy re-created.
	// (Each endpoint ends with no hostname and no hints, each slice with
	// creation second 0.)
	f.Add([]byte{
		0, 3,
		1, 0, 0, 0, 1, 2, 0, 1, // IPv4, http/80 TCP
		2,
		1, 0, 1, 0, 0, 0, 0, 0, 6, 1, 0, 0, 0, // 10.0.0.1, pod p1/u1
		1, 0, 2, 0, 0, 0, 0, 0, 6, 2, 0, 0, 0, // 10.0.0.2, pod p2/u2
		0,
		1, 0, 0, 1, 1, 2, 0, 1, // IPv6, http/80 TCP
		3,
		1, 1, 1, 0, 0, 0, 0, 0, 6, 1, 0, 0, 0, // fd00::1, pod p1/u1
		1, 7, 2, 0, 0, 0, 0, 0, 6, 2, 0, 0, 0, // fd00:0:0::2, pod p2/u2
		1, 1, 3, 0, 0, 0, 0, 0, 6, 3, 0, 0, 0, // fd00::3, pod p3/u3
		0,
		1, 0, 0, 1, 1, 2, 0, 1, // IPv6, http/80 TCP
		1,
		1, 1, 4, 0, 0, 0, 0, 0, 7, 1, 0, 0, 0, // fd00::4, pod p1 re-created
		0,
	})

	// Malformed: nil slice, FQDN, foreign, SCTP and nil-number ports, bad
	// addresses, raw bytes in names and address types.
	f.Add([]byte{
		0, 6,
		0,                         // nil slice
		1, 0, 0, 2, 1, 2, 0, 1, 0, // FQDN, http/80
		1, 2, 0, 0, 1, 2, 0, 1, 0, // other namespace
		1, 0, 0, 0, 3, // IPv4, three ports:
		2, 3, 1, // http SCTP/80
		3, 0, 0, // grpc, nil number
		4, 1, 0xff, 1, 1, // "\xff" TCP/80
		4,
		1, 4, 0, 0, 0, 0, 0, 0, // "bogus"
		1, 3, 0, 0, 0, 0, 0, 0, // zoned
		0, 0, 0, 0, 0, 0, 0, // no address
		1, 0, 5, 0, 0, 0, 4, 1, 0xfe, 0, 0, // 10.0.0.5, zone "\xfe"
		1, 3, 2, 'n', 0xff, 0, 4, 3, 'I', 'P', 'v', 0, 0, // namespace "n\xff", type "IPv"
		1, 0, 0, 4, 3, 'I', 'P', 'v', 1, 2, 0, 1, // type "IPv", http/80
		1, 1, 0, 1, 0, 0, 0, 0, 0, 0,
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		opts, seed, in := decodeFuzz(data)
		before := deepCopyAll(in)

		res := translate.Service(testNS, testSvc, in, opts)
		checkResult(t, testNS, testSvc, res)
		if !reflect.DeepEqual(in, before) {
			t.Fatal("Service modified its input")
		}

		checkRelabelled(t, in, opts, res)
		checkFamilies(t, in, opts, res)

		again := translate.Service(testNS, testSvc, shuffled(rand.New(rand.NewPCG(seed, 0)), in), opts)
		if again.Skipped != res.Skipped {
			t.Fatalf("Skipped depends on input order: %+v vs %+v", res.Skipped, again.Skipped)
		}
		want, got := marshalAll(t, res), marshalAll(t, again)
		if len(got) != len(want) {
			t.Fatalf("%d CLAs after shuffle, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("CLA %q depends on input order:\n%v\nvs\n%v", res.CLAs[i].GetClusterName(), res.CLAs[i], again.CLAs[i])
			}
		}

		// Topology variants: valid, keyed consistently, independent of
		// input order.
		if len(again.Topologies) != len(res.Topologies) {
			t.Fatalf("%d topologies after shuffle, want %d", len(again.Topologies), len(res.Topologies))
		}
		for name, topo := range res.Topologies {
			byKey := map[string][]byte{}
			for _, v := range fuzzViews {
				key, cla := topo.Key(v), topo.CLA(v)
				if (key == "") != (cla == nil) {
					t.Fatalf("%s at %+v: key %q but variant %v", name, v, key, cla)
				}
				if cla == nil {
					continue
				}
				variant := translate.Result{CLAs: append(res.CLAs[:0:0], cla)}
				checkResult(t, testNS, testSvc, variant)
				b := marshalAll(t, variant)[0]
				if prev, ok := byKey[key]; ok && !bytes.Equal(prev, b) {
					t.Fatalf("%s: views with key %q get different variants", name, key)
				}
				byKey[key] = b
				other := again.Topologies[name]
				if other.Key(v) != key || !bytes.Equal(marshalAll(t, translate.Result{CLAs: append(res.CLAs[:0:0], other.CLA(v))})[0], b) {
					t.Fatalf("%s at %+v: variant depends on input order", name, v)
				}
			}
		}
	})
}

// checkRelabelled: a slice that is not the Service's (another namespace, a
// label naming another Service, no label: what a relabelled slice becomes)
// changes nothing, so the CLAs are those of the Service's own slices alone.
func checkRelabelled(t *testing.T, in []*discoveryv1.EndpointSlice, opts translate.Options, res translate.Result) {
	t.Helper()
	var own []*discoveryv1.EndpointSlice
	for _, s := range in {
		if s != nil && s.Namespace == testNS && s.Labels[translate.ServiceNameLabel] == testSvc {
			own = append(own, s)
		}
	}
	want := marshalAll(t, translate.Service(testNS, testSvc, own, opts))
	got := marshalAll(t, res)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("slices of other Services changed the CLAs: %d CLAs with them, %d without", len(got), len(want))
	}
}

// sockets returns, per CLA name, every address:port/protocol of a result,
// additional addresses included.
func sockets(res translate.Result) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, cla := range res.CLAs {
		set := map[string]bool{}
		for _, g := range cla.GetEndpoints() {
			for _, lb := range g.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				set[fmt.Sprint(sa.GetAddress(), sa.GetPortValue(), sa.GetProtocol())] = true
				for _, aa := range lb.GetEndpoint().GetAdditionalAddresses() {
					set[fmt.Sprint(aa.GetAddress().GetSocketAddress().GetAddress(), sa.GetPortValue(), sa.GetProtocol())] = true
				}
			}
		}
		out[cla.GetClusterName()] = set
	}
	return out
}

// checkFamilies: dual-stack pairing loses and invents nothing. What the
// dual result carries, additional addresses included, is what the IPv4 and
// IPv6 results carry together, CLA by CLA; and a single-family result has
// no address of the other family.
func checkFamilies(t *testing.T, in []*discoveryv1.EndpointSlice, opts translate.Options, res translate.Result) {
	t.Helper()
	if opts.Family != translate.IPFamilyDual {
		for _, set := range sockets(res) {
			for s := range set {
				if is6 := strings.Contains(s, ":"); is6 != (opts.Family == translate.IPFamilyIPv6) {
					t.Fatalf("%v result carries %s", opts.Family, s)
				}
			}
		}
		return
	}
	want := map[string]map[string]bool{}
	for _, f := range []translate.IPFamily{translate.IPFamilyIPv4, translate.IPFamilyIPv6} {
		o := opts
		o.Family = f
		for name, set := range sockets(translate.Service(testNS, testSvc, in, o)) {
			if want[name] == nil {
				want[name] = map[string]bool{}
			}
			for s := range set {
				want[name][s] = true
			}
		}
	}
	if got := sockets(res); !reflect.DeepEqual(got, want) {
		t.Fatalf("dual-stack result differs from the IPv4 and IPv6 results together:\n got %v\nwant %v", got, want)
	}
}
