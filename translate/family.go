package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netutils "k8s.io/utils/net"
)

// IPFamily says which EndpointSlice address families [Service] serves.
//
// The zero value, IPFamilyDual, serves both, which is what a dual-stack
// cluster's Envoys can use: Kubernetes dual-stack gives every node and every
// pod both families, so an Envoy running in the cluster (as a pod or on a
// node's network) reaches either. On a single-stack cluster it serves the one
// family there is, so it is also the only setting that works unchanged on
// IPv4-only, IPv6-only and dual-stack clusters. IPFamilyIPv4 and IPFamilyIPv6
// are for Envoys outside the cluster that have one family only.
type IPFamily uint8

const (
	// IPFamilyDual serves IPv4 and IPv6 slices. An endpoint present in both
	// families (paired by targetRef) is one LbEndpoint: the IPv4 address in
	// Endpoint.address, the IPv6 one in Endpoint.additional_addresses.
	IPFamilyDual IPFamily = iota
	// IPFamilyIPv4 serves IPv4 slices only; IPv6 slices are counted in
	// SkipCounts.OtherFamilySlices.
	IPFamilyIPv4
	// IPFamilyIPv6 serves IPv6 slices only; IPv4 slices are counted in
	// SkipCounts.OtherFamilySlices.
	IPFamilyIPv6
)

// ParseIPFamily reads "dual", "ipv4" or "ipv6" (any case), the values of
// `deltaeds serve --ip-family`.
func ParseIPFamily(s string) (IPFamily, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "dual":
		return IPFamilyDual, nil
	case "ipv4":
		return IPFamilyIPv4, nil
	case "ipv6":
		return IPFamilyIPv6, nil
	}
	return 0, fmt.Errorf("IP family %q: want ipv4, ipv6 or dual", s)
}

// String returns the name ParseIPFamily reads.
func (f IPFamily) String() string {
	switch f {
	case IPFamilyDual:
		return "dual"
	case IPFamilyIPv4:
		return "ipv4"
	case IPFamilyIPv6:
		return "ipv6"
	}
	return fmt.Sprintf("IPFamily(%d)", uint8(f))
}

// translates reports whether slices of address type at are translated at
// all: IPv4 or IPv6, of a family f serves. Only those slices vote on a port
// name's protocol, as kube-proxy, which keeps one EndpointSliceCache per
// family it proxies (pkg/proxy/endpointslicecache.go), never sees the
// others.
func (f IPFamily) translates(at discoveryv1.AddressType) bool {
	return (at == discoveryv1.AddressTypeIPv4 || at == discoveryv1.AddressTypeIPv6) && f.serves(at)
}

// serves reports whether slices of the address family at (IPv4 or IPv6)
// are translated.
func (f IPFamily) serves(at discoveryv1.AddressType) bool {
	switch f {
	case IPFamilyIPv4:
		return at == discoveryv1.AddressTypeIPv4
	case IPFamilyIPv6:
		return at == discoveryv1.AddressTypeIPv6
	}
	return true
}

// parseAddress reads an endpoint address the way kube-proxy does
// (k8s.io/utils/net.ParseIPSloppy): IPv4 octets with leading zeros are
// decimal ("010.0.0.1" is 10.0.0.1), IPv6 may be in any textual form.
// Kubernetes 1.37's API server admits only canonical addresses in new
// slices, but older ones accepted these, and stored slices keep them. The
// result is sent in canonical form, which Envoy's parser (inet_pton) always
// accepts: leading zeros would get the whole CLA NACKed. It reports false
// for what is not an address of the slice's family: a zone (inet_pton knows
// none), and an IPv4-mapped IPv6 address (it is an IPv4 endpoint in an IPv6
// slice, and would dodge deduplication with the same IPv4 endpoint).
func parseAddress(s string, want4 bool) (netip.Addr, bool) {
	// The strict parser first: it takes canonical addresses, nearly all
	// of them, without allocating. What it accepts ParseIPSloppy accepts
	// too, zones aside, which both paths reject.
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr, addr.Zone() == "" && !addr.Is4In6() && addr.Is4() == want4
	}
	ip := netutils.ParseIPSloppy(s)
	if ip == nil {
		return netip.Addr{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	// ParseIPSloppy returns IPv4 addresses in their 16-byte mapped form, so
	// only the text tells "10.0.0.1" from "::ffff:10.0.0.1".
	if strings.Contains(s, ":") {
		return addr, !want4 && !addr.Is4In6()
	}
	return addr.Unmap(), want4
}

// targetRef is an endpoint's targetRef, as far as pairing reads it. The
// namespace defaults to the Service's.
type targetRef struct {
	kind, namespace, name, uid string
}

func refOf(r *corev1.ObjectReference, namespace string) targetRef {
	if r == nil {
		return targetRef{}
	}
	return targetRef{kind: r.Kind, namespace: cmp.Or(r.Namespace, namespace), name: r.Name, uid: string(r.UID)}
}

// compareRefs orders targetRefs as given, nil first, for the tie-break
// between copies of one address.
func compareRefs(a, b *corev1.ObjectReference) int {
	if a == nil || b == nil {
		return cmp.Compare(btoi(a != nil), btoi(b != nil))
	}
	return cmp.Or(
		strings.Compare(a.Kind, b.Kind),
		strings.Compare(a.Namespace, b.Namespace),
		strings.Compare(a.Name, b.Name),
		strings.Compare(string(a.UID), string(b.UID)),
	)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// pairKey is what two hosts of the two families must share to be one
// LbEndpoint: the object behind them, and the socket's port and protocol.
type pairKey struct {
	ref   targetRef
	port  uint16
	proto corev3.SocketAddress_Protocol
}

// pairFamilies merges, in place, each IPv4 host with the IPv6 host of the
// same targetRef, port and protocol into one host: the IPv4 one, carrying
// the IPv6 address in extra. It returns the hosts left, in their order.
//
// Envoy makes one host of an LbEndpoint and its additional_addresses
// (EdsClusterImpl::BatchUpdateHelper::updateLocalityEndpoints in
// source/extensions/clusters/eds/eds.cc puts the address first in the
// host's address list), so the pod takes one share of traffic, not two.
// HostImplBase::createConnection (source/common/upstream/upstream_impl.cc)
// connects to a host with more than one address through
// HappyEyeballsConnectionImpl (source/common/network/
// happy_eyeballs_connection_impl.cc): HappyEyeballsConnectionProvider::
// sortAddresses interleaves the families starting with the first address's
// (unless the cluster's happy_eyeballs_config names a first family), tries
// the next address 300 ms later or at once when an attempt fails, and keeps
// the first connection made. Active health checks use the host's address
// alone (HostImplBase::createHealthCheckConnection passes no address list).
//
// The preferred family, the one in Endpoint.address, is IPv4: EndpointSlices
// do not say which family the Service lists first (spec.ipFamilies), and a
// fixed rule keeps the output independent of the order slices come in.
// Envoys that should try IPv6 first say so in their cluster's
// upstream_connection_options.happy_eyeballs_config.
//
// Pairing is by targetRef only (kind, namespace, name and uid, each as
// given); a host without a targetRef name is paired with nothing. A
// targetRef that has more than one host of a family for a port (a pod
// re-created under the same name by a producer that sets no uid) is
// ambiguous: its hosts stay apart rather than risk pairing two pods. The
// merged host keeps the IPv4 endpoint's conditions, zone and node; the two
// copies of one pod only differ while the controller is between writing the
// two slices.
func pairFamilies(hosts []host, namespace string) []host {
	// A single-stack port, nearly all of them, has nothing to pair and
	// costs one pass.
	var refs [2]int
	for i := range hosts {
		if hosts[i].ref != nil {
			refs[btoi(!hosts[i].key.addr.Is4())]++
		}
	}
	if refs[0] == 0 || refs[1] == 0 {
		return hosts
	}
	// slot holds, per family, the index of the only host seen plus one, 0
	// when none was, -1 when several were.
	type slot [2]int
	keys := make(map[pairKey]slot, max(refs[0], refs[1]))
	for i := range hosts {
		h := &hosts[i]
		if h.ref == nil {
			continue
		}
		k := pairKey{ref: refOf(h.ref, namespace), port: h.key.port, proto: h.key.proto}
		s := keys[k]
		f := btoi(!h.key.addr.Is4())
		if s[f] == 0 {
			s[f] = i + 1
		} else {
			s[f] = -1
		}
		keys[k] = s
	}
	drop := make([]bool, len(hosts))
	paired := 0
	for _, s := range keys {
		if s[0] > 0 && s[1] > 0 {
			hosts[s[0]-1].extra = hosts[s[1]-1].key.addr
			drop[s[1]-1] = true
			paired++
		}
	}
	if paired == 0 {
		return hosts
	}
	out := hosts[:0]
	for i := range hosts {
		if !drop[i] {
			out = append(out, hosts[i])
		}
	}
	return out
}
