package translate

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// ServiceNameLabel is the label tying an EndpointSlice to its Service.
	ServiceNameLabel = discoveryv1.LabelServiceName

	// MetadataKey is the filter_metadata namespace under which each
	// LbEndpoint carries the Kubernetes identity of its endpoint, for access
	// logs and for matching in Envoy filters. Only non-empty fields are set.
	MetadataKey = "deltaeds"
	// MetadataPod is the field holding the name of the Pod behind the endpoint.
	MetadataPod = "pod"
	// MetadataNamespace is the field holding the Pod's namespace; set with MetadataPod.
	MetadataNamespace = "namespace"
	// MetadataNode is the field holding the name of the Node the endpoint runs on.
	MetadataNode = "node"

	// PriorityReady is the priority of ready endpoints.
	PriorityReady uint32 = 0
	// PriorityTerminating is the priority of endpoints that are serving but
	// terminating: kube-proxy's "terminating endpoints only when none is
	// ready". Envoy sends them traffic when priority 0 is empty, and also,
	// in part, when priority 0's health falls below 100% (a share of hosts
	// ejected by outlier detection or failing active health checks: with
	// the default overprovisioning factor of 1.4, priority 0 keeps all
	// traffic while at least 1/1.4 ≈ 71% of its hosts are healthy, and
	// spills the rest to this priority below that).
	PriorityTerminating uint32 = 1
	// PriorityUnready is the priority of the endpoints sent only under
	// [Options.IncludeUnready], all UNHEALTHY: after the terminating
	// fallback, so that they never take traffic, nor lower priority 0's
	// health, while a ready or terminating endpoint exists.
	PriorityUnready uint32 = 2
)

// Options changes what [Service] sends. The zero value is the kube-proxy
// behaviour.
type Options struct {
	// IncludeUnready also sends the endpoints kube-proxy would leave out
	// (neither ready nor serving-while-terminating), as UNHEALTHY at
	// PriorityUnready, after the terminating fallback. Envoy shows them in
	// its admin and stats; it routes nothing to them while any ready or
	// terminating endpoint is healthy, because an all-UNHEALTHY priority has
	// no health to take load with. (At priority 0 they would lower its
	// health: with 2 ready, 3 starting and 1 terminating pod, about 44% of
	// requests would go to the terminating pod, and below Envoy's 50% panic
	// threshold traffic would be spread over the unready pods too.) The
	// flag therefore never changes where traffic goes while a ready
	// endpoint exists.
	IncludeUnready bool

	// NodeRegion, if set, gives the region of a Kubernetes Node (its
	// topology.kubernetes.io/region label), or "" when unknown. Each
	// endpoint's locality then carries the region of its node as well as its
	// zone. Envoy compares a node's locality with an endpoint group's
	// region, zone and sub_zone together, so a fleet whose bootstraps set
	// node.locality.region needs it for zone-aware routing to find its local
	// hosts. It is called once per distinct node per call to [Service], must
	// be safe for concurrent use, and must not block.
	NodeRegion func(node string) string

	// InternalTrafficLocal is the Service's spec.internalTrafficPolicy ==
	// Local (it is per Service: the caller sets it for each call). Clients
	// that tell their node then get only the endpoints on that node: see
	// [Topology].
	InternalTrafficLocal bool

	// Family is the address families served; the zero value is both, with
	// a pod's two addresses in one LbEndpoint (see [IPFamily]).
	Family IPFamily
}

// SkipCounts says how much of the input [Service] left out, by reason (it is
// [Result].Skipped). Slice
// counts are per EndpointSlice, port counts per port entry of an accepted
// slice, endpoint counts per endpoint entry of an accepted slice (not per
// port), and DuplicateEndpoints per address:port dropped from a CLA.
type SkipCounts struct {
	// InvalidSlices: nil entries, and slices whose AddressType is none of
	// IPv4, IPv6 or FQDN.
	InvalidSlices int
	// ForeignSlices: slices of another namespace or without
	// kubernetes.io/service-name=<service>. All of them when the Service key
	// itself is unusable (empty, containing "/", or not UTF-8).
	ForeignSlices int
	// FQDNSlices: Envoy EDS wants IP addresses; FQDN slices would need a
	// STRICT_DNS cluster, which is the Envoy config's business, not EDS's.
	FQDNSlices int
	// OtherFamilySlices: IPv4 or IPv6 slices of the family Options.Family
	// leaves out.
	OtherFamilySlices int

	// UnnumberedPorts: a nil port number means "all ports", which no
	// SocketAddress can express.
	UnnumberedPorts int
	// IncompletePorts: a nil port name or a nil protocol. The API server
	// defaults both ("" and TCP), so only slices that did not come through
	// one carry them; kube-proxy and Istio ignore such ports rather than
	// guess, and so does deltaeds.
	IncompletePorts int
	// MixedProtocolPorts: port entries whose name another slice of the
	// Service carries with another protocol (TCP vs UDP, while a Service
	// port's protocol is being edited). One CLA never mixes protocols: the
	// protocol of the newest slice carrying the name wins, as that is the
	// one the EndpointSlice controller wrote from the edited Service (ties:
	// the protocol with more endpoints, then TCP); the others are counted
	// here, per port entry.
	MixedProtocolPorts int
	// SCTPPorts: Envoy has no SCTP upstreams.
	SCTPPorts int
	// InvalidPorts: numbers outside 1..65535, unknown protocols, names that
	// are not UTF-8.
	InvalidPorts int

	// InvalidEndpoints: no address, an addresses[0] that is not an IP of the
	// slice's family as kube-proxy parses it (IPv4-mapped IPv6 and zoned
	// addresses included; leading zeros are accepted), or
	// zone, node or pod strings that are not UTF-8 (proto3 could not
	// marshal them).
	InvalidEndpoints int
	// UnreadyEndpoints: neither ready nor serving-while-terminating, left
	// out because Options.IncludeUnready is false.
	UnreadyEndpoints int
	// DuplicateEndpoints: address:port entries of a CLA that another slice
	// (or the same one) also carries; one copy is kept.
	DuplicateEndpoints int
}

// Result is what [Service] computed.
type Result struct {
	// CLAs holds one CLA per port name found in the Service's slices, sorted
	// by ClusterName. A port whose endpoints were all left out still has its
	// (empty) CLA: the port exists, it just has nowhere to send traffic.
	CLAs []*endpointv3.ClusterLoadAssignment
	// Skipped counts what was left out and why.
	Skipped SkipCounts
	// Topologies holds, by CLA name, how to build the CLA's variants for
	// where a client runs, for the CLAs that have any (their slices carry
	// topology hints, or the Service's internalTrafficPolicy is Local); see
	// [Topology]. The CLA in CLAs is what a client that tells no place, or
	// one for which no rule applies, receives.
	Topologies map[string]*Topology
	// Encoded is set by [ServiceCache.Translate] only: Encoded[i],
	// concatenated, is CLAs[i] under deterministic marshalling
	// (proto.MarshalOptions{Deterministic: true}), byte for byte, built
	// from pieces encoded once per endpoint. It is nil for a CLA whose
	// pieces could not be encoded: marshal that CLA instead. The pieces
	// are shared with later results and must not be modified.
	Encoded [][][]byte
}

// state is an endpoint's standing, ordered best first: when duplicates of one
// address:port disagree, the smallest state wins.
type state uint8

const (
	stateReady       state = iota // priority 0, HEALTHY
	stateTerminating              // priority 1, HEALTHY
	stateUnready                  // priority 2, UNHEALTHY; only with IncludeUnready
)

func (s state) priority() uint32 {
	switch s {
	case stateTerminating:
		return PriorityTerminating
	case stateUnready:
		return PriorityUnready
	}
	return PriorityReady
}

// classify reads the conditions the way kube-proxy does. A nil Ready or
// Serving means true, a nil Terminating false, as the discovery/v1 API
// documents. (The v1beta1 API said a nil Serving defers to Ready; the two
// differ only for Ready=false, Serving=nil, Terminating=true, which v1 makes a
// terminating fallback.)
func classify(c discoveryv1.EndpointConditions) state {
	if c.Ready == nil || *c.Ready {
		return stateReady
	}
	serving := c.Serving == nil || *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	if serving && terminating {
		return stateTerminating
	}
	// Serving but not terminating yet not ready is a contradiction the
	// controller never writes; like kube-proxy, trust Ready.
	return stateUnready
}

type hostKey struct {
	addr  netip.Addr
	port  uint16
	proto corev3.SocketAddress_Protocol
}

// host is one candidate LbEndpoint. It holds every input that reaches the
// output, so that comparing two hosts field by field is a total order on what
// they would produce.
type host struct {
	key   hostKey
	state state
	// prio is the priority the host is emitted at: state.priority() in the
	// plain CLA, the view's tier in a Topology variant.
	prio     uint32
	region   string
	zone     string
	hostname string
	pod      string
	podNS    string
	node     string
	// forZones and forNodes are the endpoint's hints, sorted and joined by
	// "\x00" ("" when none), for Topology.
	forZones string
	forNodes string
	// ref is the input's targetRef when it names something: what
	// pairFamilies pairs by. A pointer keeps the host small.
	ref   *corev1.ObjectReference
	extra netip.Addr // the other family's address, once paired
}

// preferred reports whether a should replace b as the copy of a duplicated
// address:port: the better state wins, then the smaller region, zone,
// hostname, pod, namespace and node (then hints and targetRef). The
// tie-break has no meaning beyond making the winner independent of which
// slice was listed first, which deterministic output requires.
func preferred(a, b host) bool {
	return cmp.Or(
		cmp.Compare(a.state, b.state),
		strings.Compare(a.region, b.region),
		strings.Compare(a.zone, b.zone),
		strings.Compare(a.hostname, b.hostname),
		strings.Compare(a.pod, b.pod),
		strings.Compare(a.podNS, b.podNS),
		strings.Compare(a.node, b.node),
		strings.Compare(a.forZones, b.forZones),
		strings.Compare(a.forNodes, b.forNodes),
		compareRefs(a.ref, b.ref),
	) < 0
}

type slicePort struct {
	name  string
	port  uint16
	proto corev3.SocketAddress_Protocol
	hosts *portHosts // where endpoints of this port go
}

// Service computes the CLAs of the Service namespace/name from all of its
// EndpointSlices, in any order. It never panics, never returns a CLA that
// fails Validate, and never modifies its input.
//
// Slices of other Services and FQDN slices are skipped. Ports are matched by
// name, each endpoint taking its own slice's port number, so a port
// renumbered mid-rollout shows both numbers. A port entry with a nil name,
// number or protocol is skipped (the API server defaults the name to "", the
// unnamed port, and the protocol to TCP). One CLA never mixes TCP and UDP:
// see [SkipCounts.MixedProtocolPorts]. Only addresses[0] of an endpoint is used,
// as kube-proxy does, parsed as kube-proxy does (leading zeros in IPv4 are
// decimal) and emitted in canonical form.
//
// [Options.Family] picks the address families. With both (the default), an
// IPv4 and an IPv6 endpoint of one targetRef, port and protocol are one
// LbEndpoint: the IPv4 address, with the IPv6 one in additional_addresses
// (see pairFamilies for the rules and what Envoy does with it). With one
// family, slices of the other are skipped and counted.
//
// Ready endpoints go to priority 0 HEALTHY; serving-and-terminating ones to
// priority 1, also HEALTHY, because Envoy never balances to DRAINING hosts
// and the fallback would carry nothing. Other endpoints are left out unless
// [Options.IncludeUnready], which puts them at priority 2, UNHEALTHY. A
// priority below the highest used that has no endpoint gets an empty group:
// the API asks for priorities without gaps (gRPC clients NACK them), and an
// empty priority makes Envoy fail over past it.
//
// An address:port carried by several slices (the controller moves endpoints
// between slices non-atomically) appears once, the copy with the best state
// (ready, then terminating, then unready) and, among equals, the smallest
// region, zone, hostname, pod, namespace and node.
//
// Groups are keyed by (priority, region, zone) and sorted that way, each
// with its Locality (the region only under [Options.NodeRegion]) and a
// load_balancing_weight equal to its number of endpoints, so that Envoy's
// locality-weighted load balancing, when a cluster enables it, splits
// traffic as evenly over hosts as without it (Envoy gives a locality without
// a weight none). Endpoints within a group are sorted by address (IPv4
// before IPv6, numerically), port and protocol.
//
// Endpoint.hostname is the EndpointSlice endpoint's own hostname (set for
// StatefulSet pods behind a headless Service, and in mirrored slices), and
// empty otherwise: Envoy sends it as the Host header under
// auto_host_rewrite and as the TLS SNI under auto_sni, where a pod name
// would be wrong. The pod, its namespace and the node are in the
// deltaeds metadata.
func Service(namespace, name string, endpointSlices []*discoveryv1.EndpointSlice, opts Options) Result {
	var res Result
	skipped := &res.Skipped
	keyOK := validKeyPart(namespace) && validKeyPart(name)

	// Sizing each port for the endpoints that may carry it spares a
	// 100,000-endpoint Service a dozen rehashes per port, without
	// over-allocating for ports that only a few slices have. The same pass
	// finds which protocol each port name keeps.
	sizes := make(map[string]int)
	protos := make(map[string]*protocolVote)
	for _, s := range endpointSlices {
		if s == nil || !keyOK || s.Namespace != namespace || s.Labels[ServiceNameLabel] != name ||
			!opts.Family.translates(s.AddressType) {
			continue
		}
		for _, p := range s.Ports {
			pname := deref(p.Name)
			sizes[pname] += len(s.Endpoints)
			if p.Protocol != nil && (*p.Protocol == corev1.ProtocolTCP || *p.Protocol == corev1.ProtocolUDP) {
				v := protos[pname]
				if v == nil {
					v = &protocolVote{}
					protos[pname] = v
				}
				v.add(*p.Protocol, s.CreationTimestamp, len(s.Endpoints))
			}
		}
	}

	byPort := make(map[string]*portHosts)
	regions := make(map[string]string) // node -> region, for this call
	var ports []slicePort              // reused across slices
	for _, s := range endpointSlices {
		if s == nil {
			skipped.InvalidSlices++
			continue
		}
		// Without keyOK an empty name would match every unlabelled slice.
		if !keyOK || s.Namespace != namespace || s.Labels[ServiceNameLabel] != name {
			skipped.ForeignSlices++
			continue
		}
		var want4 bool
		switch s.AddressType {
		case discoveryv1.AddressTypeIPv4:
			want4 = true
		case discoveryv1.AddressTypeIPv6:
		case discoveryv1.AddressTypeFQDN:
			skipped.FQDNSlices++
			continue
		default:
			skipped.InvalidSlices++
			continue
		}
		if !opts.Family.serves(s.AddressType) {
			skipped.OtherFamilySlices++
			continue
		}

		ports = slicePorts(ports[:0], s.Ports, protos, skipped)
		for i, p := range ports {
			if byPort[p.name] == nil {
				byPort[p.name] = newPortHosts(sizes[p.name])
			}
			ports[i].hosts = byPort[p.name]
		}
		for i := range s.Endpoints {
			h, ok := endpointHost(&s.Endpoints[i], want4, namespace, opts, regions, skipped)
			if !ok {
				continue
			}
			for _, p := range ports {
				h.key.port, h.key.proto = p.port, p.proto
				if !p.hosts.add(h) {
					skipped.DuplicateEndpoints++
				}
			}
		}
	}

	if len(byPort) == 0 {
		return res
	}
	res.CLAs = make([]*endpointv3.ClusterLoadAssignment, 0, len(byPort))
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		hosts := byPort[port].hosts
		if opts.Family == IPFamilyDual {
			hosts = pairFamilies(hosts, namespace)
		}
		cla := buildCLA(ClusterName(namespace, name, port), hosts)
		res.CLAs = append(res.CLAs, cla)
		if t := newTopology(cla.ClusterName, hosts, opts.InternalTrafficLocal); t != nil {
			if res.Topologies == nil {
				res.Topologies = make(map[string]*Topology)
			}
			res.Topologies[cla.ClusterName] = t
		}
	}
	return res
}

// protocolVote decides which protocol a port name keeps when slices
// disagree: the newest slice's (creation timestamps have one-second
// resolution, hence the tie-breaks), then the one carrying more endpoints,
// then TCP. Every input counts, whatever its order, so the choice is
// deterministic.
type protocolVote struct {
	newest    [2]metav1.Time // by protocol: 0 TCP, 1 UDP
	endpoints [2]int
	seen      [2]bool
}

func protocolIndex(p corev1.Protocol) int {
	if p == corev1.ProtocolUDP {
		return 1
	}
	return 0
}

func (v *protocolVote) add(p corev1.Protocol, created metav1.Time, endpoints int) {
	i := protocolIndex(p)
	v.seen[i] = true
	v.endpoints[i] += endpoints
	if v.newest[i].Before(&created) {
		v.newest[i] = created
	}
}

// keeps reports whether entries of protocol p survive the vote.
func (v *protocolVote) keeps(p corev1.Protocol) bool {
	if v == nil || !v.seen[0] || !v.seen[1] {
		return true
	}
	winner := 0 // TCP
	switch {
	case v.newest[0].Before(&v.newest[1]):
		winner = 1
	case v.newest[1].Before(&v.newest[0]):
	case v.endpoints[1] > v.endpoints[0]:
		winner = 1
	}
	return protocolIndex(p) == winner
}

// portHosts collects the hosts of one port name. Hosts live in a slice and
// the map only indexes it, which keeps the map small and lets buildCLA use
// the hosts without copying them out of a map.
type portHosts struct {
	index map[hostKey]int
	hosts []host
}

func newPortHosts(size int) *portHosts {
	return &portHosts{index: make(map[hostKey]int, size), hosts: make([]host, 0, size)}
}

// add records h, or keeps the preferred of h and the host already recorded
// at its address:port and reports false.
func (ph *portHosts) add(h host) bool {
	if i, dup := ph.index[h.key]; dup {
		if preferred(h, ph.hosts[i]) {
			ph.hosts[i] = h
		}
		return false
	}
	ph.index[h.key] = len(ph.hosts)
	ph.hosts = append(ph.hosts, h)
	return true
}

// validKeyPart reports whether s can be a namespace or Service name in a CLA
// name that ParseClusterName reads back and proto3 can marshal.
func validKeyPart(s string) bool {
	return s != "" && !strings.Contains(s, "/") && utf8.ValidString(s)
}

func slicePorts(dst []slicePort, ports []discoveryv1.EndpointPort, protos map[string]*protocolVote, skipped *SkipCounts) []slicePort {
	for _, p := range ports {
		if p.Name == nil || p.Protocol == nil {
			skipped.IncompletePorts++
			continue
		}
		var proto corev3.SocketAddress_Protocol
		switch *p.Protocol {
		case corev1.ProtocolTCP:
			proto = corev3.SocketAddress_TCP
		case corev1.ProtocolUDP:
			proto = corev3.SocketAddress_UDP
		case corev1.ProtocolSCTP:
			skipped.SCTPPorts++
			continue
		default:
			skipped.InvalidPorts++
			continue
		}
		if p.Port == nil {
			skipped.UnnumberedPorts++
			continue
		}
		name := *p.Name
		if n := *p.Port; n < 1 || n > 65535 || !utf8.ValidString(name) {
			skipped.InvalidPorts++
			continue
		}
		if !protos[name].keeps(*p.Protocol) {
			skipped.MixedProtocolPorts++
			continue
		}
		dst = append(dst, slicePort{name: name, port: uint16(*p.Port), proto: proto})
	}
	return dst
}

// endpointHost turns one endpoint into a host with no port yet, or reports
// (and counts) why it is left out.
func endpointHost(ep *discoveryv1.Endpoint, want4 bool, namespace string, opts Options, regions map[string]string, skipped *SkipCounts) (host, bool) {
	if len(ep.Addresses) == 0 {
		skipped.InvalidEndpoints++
		return host{}, false
	}
	addr, ok := parseAddress(ep.Addresses[0], want4)
	if !ok {
		skipped.InvalidEndpoints++
		return host{}, false
	}
	st := classify(ep.Conditions)
	h := host{
		key:      hostKey{addr: addr},
		state:    st,
		prio:     st.priority(),
		zone:     deref(ep.Zone),
		hostname: deref(ep.Hostname),
		node:     deref(ep.NodeName),
	}
	if ref := ep.TargetRef; ref != nil && ref.Name != "" {
		h.ref = ref
		if ref.Kind == "Pod" {
			h.pod, h.podNS = ref.Name, cmp.Or(ref.Namespace, namespace)
		}
	}
	if opts.NodeRegion != nil && h.node != "" {
		region, ok := regions[h.node]
		if !ok {
			region = opts.NodeRegion(h.node)
			regions[h.node] = region
		}
		h.region = region
	}
	if ep.Hints != nil {
		h.forZones, h.forNodes = joinHints(ep.Hints)
	}
	if !utf8.ValidString(h.zone) || !utf8.ValidString(h.node) || !utf8.ValidString(h.pod) || !utf8.ValidString(h.podNS) ||
		!utf8.ValidString(h.hostname) || !utf8.ValidString(h.region) {
		skipped.InvalidEndpoints++
		return host{}, false
	}
	if h.state == stateUnready && !opts.IncludeUnready {
		skipped.UnreadyEndpoints++
		return host{}, false
	}
	return h, true
}

// compareHosts orders hosts as the CLA lists them: by group (priority,
// region, zone), then by address, port and protocol. Keys are unique within a CLA, so
// the order is total and the input order cannot leak into the output.
func compareHosts(a, b *host) int {
	if c := cmp.Compare(a.prio, b.prio); c != 0 {
		return c
	}
	if c := strings.Compare(a.region, b.region); c != 0 {
		return c
	}
	if c := strings.Compare(a.zone, b.zone); c != 0 {
		return c
	}
	if c := a.key.addr.Compare(b.key.addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key.port, b.key.port); c != 0 {
		return c
	}
	return cmp.Compare(a.key.proto, b.key.proto)
}

// lbBlock holds the messages making up one LbEndpoint, and metaBlock those
// of its metadata. buildCLA allocates them in one array per CLA: a
// 100,000-endpoint Service would otherwise cost two million small
// allocations per update, and the GC work that goes with them. A CLA is
// replaced whole, so the arrays live and die with it.
type lbBlock struct {
	lb   endpointv3.LbEndpoint
	id   endpointv3.LbEndpoint_Endpoint
	ep   endpointv3.Endpoint
	addr corev3.Address
	sa   corev3.Address_SocketAddress
	sock corev3.SocketAddress
	port corev3.SocketAddress_PortValue
}

// fill builds h's LbEndpoint in b, with address addr, and returns it. x (nil
// when h has no additional address) receives extraAddr; m (nil when h has no
// pod or node) its metadata. buildCLA and ServiceCache both build through
// here, so their messages, and therefore their bytes, cannot drift apart.
func (b *lbBlock) fill(h *host, addr string, x *extraBlock, extraAddr string, m *metaBlock) *endpointv3.LbEndpoint {
	b.port.PortValue = uint32(h.key.port)
	b.sock.Protocol = h.key.proto
	b.sock.Address = addr
	b.sock.PortSpecifier = &b.port
	if x != nil {
		x.port.PortValue = b.port.PortValue
		x.sock.Protocol = h.key.proto
		x.sock.Address = extraAddr
		x.sock.PortSpecifier = &x.port
		x.sa.SocketAddress = &x.sock
		x.addr.Address = &x.sa
		x.aa.Address = &x.addr
		x.list[0] = &x.aa
		b.ep.AdditionalAddresses = x.list[:]
	}
	b.sa.SocketAddress = &b.sock
	b.addr.Address = &b.sa
	b.ep.Address = &b.addr
	b.ep.Hostname = h.hostname
	b.id.Endpoint = &b.ep
	b.lb.HostIdentifier = &b.id
	b.lb.HealthStatus = corev3.HealthStatus_HEALTHY
	if h.state == stateUnready {
		b.lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
	}
	if m != nil {
		b.lb.Metadata = fillMetadata(m, h)
	}
	return &b.lb
}

// extraBlock holds the messages of an LbEndpoint's additional address, for
// the hosts pairFamilies merged.
type extraBlock struct {
	list [1]*endpointv3.Endpoint_AdditionalAddress
	aa   endpointv3.Endpoint_AdditionalAddress
	addr corev3.Address
	sa   corev3.Address_SocketAddress
	sock corev3.SocketAddress
	port corev3.SocketAddress_PortValue
}

type metaBlock struct {
	md     corev3.Metadata
	st     structpb.Struct
	values [3]structpb.Value
	strs   [3]structpb.Value_StringValue
}

// appendLocalityGroups appends to cla one LocalityLbEndpoints per run of
// the n hosts (sorted by compareHosts; at(i) is the i-th, ptrs[i] its
// LbEndpoint) with equal priority, region and zone, and an empty one for
// each priority skipped: priorities must have no gaps (Envoy and gRPC
// clients NACK them); an empty one makes Envoy fail over past it. Each group
// is weighted by its endpoint count: Envoy's locality-weighted load
// balancing gives a locality without a weight no traffic (upstream_impl.cc,
// PriorityStateManager::initializePriorityFor records only set weights,
// updateClusterPrioritySet reads the others as 0), and the count keeps the
// per-host share even. each, when not nil, is called with every group
// appended and the hosts [start, start+count) it holds (count 0 for a gap).
func appendLocalityGroups(cla *endpointv3.ClusterLoadAssignment, n int, at func(int) *host, ptrs []*endpointv3.LbEndpoint,
	each func(g *endpointv3.LocalityLbEndpoints, start, count int)) {
	next := PriorityReady // the lowest priority not emitted yet
	for start := 0; start < n; {
		first := at(start)
		prio, region, zone := first.prio, first.region, first.zone
		for ; next < prio; next++ {
			g := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, Priority: next}
			cla.Endpoints = append(cla.Endpoints, g)
			if each != nil {
				each(g, start, 0)
			}
		}
		next = prio + 1
		end := start + 1
		for end < n {
			if h := at(end); h.prio != prio || h.region != region || h.zone != zone {
				break
			}
			end++
		}
		g := &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: region, Zone: zone},
			Priority:            prio,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(end - start)),
			// Full slice expression: a caller appending to one group must
			// not overwrite the next group's endpoints.
			LbEndpoints: ptrs[start:end:end],
		}
		cla.Endpoints = append(cla.Endpoints, g)
		if each != nil {
			each(g, start, end-start)
		}
		start = end
	}
}

// buildCLA turns the hosts of one port into its CLA.
func buildCLA(name string, hosts []host) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(hosts) == 0 {
		return cla
	}
	// Sorting pointers: a host is a hundred bytes, too big to move around.
	order := make([]*host, len(hosts))
	for i := range hosts {
		order[i] = &hosts[i]
	}
	slices.SortFunc(order, compareHosts)

	// All addresses share one string, sliced per endpoint: host i's address
	// ends at ends[2i], its additional address (if any) at ends[2i+1].
	var buf []byte
	ends := make([]int, 2*len(hosts))
	nMeta, nExtra := 0, 0
	for i, h := range order {
		buf = h.key.addr.AppendTo(buf)
		ends[2*i] = len(buf)
		if h.extra.IsValid() {
			buf = h.extra.AppendTo(buf)
			nExtra++
		}
		ends[2*i+1] = len(buf)
		if h.pod != "" || h.node != "" {
			nMeta++
		}
	}
	addrs := string(buf)

	blocks := make([]lbBlock, len(hosts))
	metas := make([]metaBlock, nMeta)
	extras := make([]extraBlock, nExtra)
	ptrs := make([]*endpointv3.LbEndpoint, len(hosts))
	start := 0
	for i, h := range order {
		var x *extraBlock
		if h.extra.IsValid() {
			x, extras = &extras[0], extras[1:]
		}
		var m *metaBlock
		if h.pod != "" || h.node != "" {
			m, metas = &metas[0], metas[1:]
		}
		var addr string
		addr, start = addrs[start:ends[2*i]], ends[2*i+1]
		ptrs[i] = blocks[i].fill(h, addr, x, addrs[ends[2*i]:ends[2*i+1]], m)
	}

	appendLocalityGroups(cla, len(order), func(i int) *host { return order[i] }, ptrs, nil)
	return cla
}

func fillMetadata(m *metaBlock, h *host) *corev3.Metadata {
	fields := make(map[string]*structpb.Value, 3)
	set := func(i int, key, value string) {
		m.strs[i].StringValue = value
		m.values[i].Kind = &m.strs[i]
		fields[key] = &m.values[i]
	}
	if h.pod != "" {
		set(0, MetadataPod, h.pod)
		set(1, MetadataNamespace, h.podNS)
	}
	if h.node != "" {
		set(2, MetadataNode, h.node)
	}
	m.st.Fields = fields
	m.md.FilterMetadata = map[string]*structpb.Struct{MetadataKey: &m.st}
	return &m.md
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
