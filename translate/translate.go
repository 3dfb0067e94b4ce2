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
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
}

// Counts says how much of the input [Service] left out, by reason. Slice
// counts are per EndpointSlice, port counts per port entry of an accepted
// slice, endpoint counts per endpoint entry of an accepted slice (not per
// port), and DuplicateEndpoints per address:port dropped from a CLA.
type Counts struct {
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

	// UnnumberedPorts: a nil port number means "all ports", which no
	// SocketAddress can express.
	UnnumberedPorts int
	// SCTPPorts: Envoy has no SCTP upstreams.
	SCTPPorts int
	// InvalidPorts: numbers outside 1..65535, unknown protocols, names that
	// are not UTF-8.
	InvalidPorts int

	// InvalidEndpoints: no address, an addresses[0] that is not an IP of the
	// slice's family (IPv4-mapped IPv6 and zoned addresses included), or
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
	Skipped Counts
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
	zone  string
	pod   string
	podNS string
	node  string
}

// preferred reports whether a should replace b as the copy of a duplicated
// address:port: the better state wins, then the smaller zone, pod, namespace
// and node. The tie-break has no meaning beyond making the winner independent
// of which slice was listed first, which deterministic output requires.
func preferred(a, b host) bool {
	return cmp.Or(
		cmp.Compare(a.state, b.state),
		strings.Compare(a.zone, b.zone),
		strings.Compare(a.pod, b.pod),
		strings.Compare(a.podNS, b.podNS),
		strings.Compare(a.node, b.node),
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
// name (nil is the unnamed port ""), each endpoint taking its own slice's port
// number, so a port renumbered mid-rollout shows both numbers. Only
// addresses[0] of an endpoint is used, as kube-proxy does. Addresses are
// emitted in canonical form.
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
// zone, pod, namespace and node.
//
// Groups are keyed by (priority, zone) and sorted that way, each with its
// Locality.Zone set; endpoints within a group are sorted by address (IPv4
// before IPv6, numerically), port and protocol. Endpoint.Hostname is the Pod
// name when the endpoint's targetRef is a Pod; note that Envoy's
// auto_host_rewrite would use it as the Host header.
func Service(namespace, name string, endpointSlices []*discoveryv1.EndpointSlice, opts Options) Result {
	var res Result
	sk := &res.Skipped
	keyOK := validKeyPart(namespace) && validKeyPart(name)

	// Sizing each port for the endpoints that may carry it spares a
	// 100,000-endpoint Service a dozen rehashes per port, without
	// over-allocating for ports that only a few slices have.
	sizes := make(map[string]int)
	for _, s := range endpointSlices {
		if s != nil {
			for _, p := range s.Ports {
				sizes[deref(p.Name)] += len(s.Endpoints)
			}
		}
	}

	byPort := make(map[string]*portHosts)
	var ports []slicePort // reused across slices
	for _, s := range endpointSlices {
		if s == nil {
			sk.InvalidSlices++
			continue
		}
		// Without keyOK an empty name would match every unlabelled slice.
		if !keyOK || s.Namespace != namespace || s.Labels[ServiceNameLabel] != name {
			sk.ForeignSlices++
			continue
		}
		var want4 bool
		switch s.AddressType {
		case discoveryv1.AddressTypeIPv4:
			want4 = true
		case discoveryv1.AddressTypeIPv6:
		case discoveryv1.AddressTypeFQDN:
			sk.FQDNSlices++
			continue
		default:
			sk.InvalidSlices++
			continue
		}

		ports = slicePorts(ports[:0], s.Ports, sk)
		for i, p := range ports {
			if byPort[p.name] == nil {
				byPort[p.name] = newPortHosts(sizes[p.name])
			}
			ports[i].hosts = byPort[p.name]
		}
		for i := range s.Endpoints {
			h, ok := endpointHost(&s.Endpoints[i], want4, namespace, opts, sk)
			if !ok {
				continue
			}
			for _, p := range ports {
				h.key.port, h.key.proto = p.port, p.proto
				if !p.hosts.add(h) {
					sk.DuplicateEndpoints++
				}
			}
		}
	}

	if len(byPort) == 0 {
		return res
	}
	res.CLAs = make([]*endpointv3.ClusterLoadAssignment, 0, len(byPort))
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		res.CLAs = append(res.CLAs, buildCLA(ClusterName(namespace, name, port), byPort[port].hosts))
	}
	return res
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

func slicePorts(dst []slicePort, ports []discoveryv1.EndpointPort, sk *Counts) []slicePort {
	for _, p := range ports {
		proto := corev3.SocketAddress_TCP
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP:
			case corev1.ProtocolUDP:
				proto = corev3.SocketAddress_UDP
			case corev1.ProtocolSCTP:
				sk.SCTPPorts++
				continue
			default:
				sk.InvalidPorts++
				continue
			}
		}
		if p.Port == nil {
			sk.UnnumberedPorts++
			continue
		}
		name := deref(p.Name)
		if n := *p.Port; n < 1 || n > 65535 || !utf8.ValidString(name) {
			sk.InvalidPorts++
			continue
		}
		dst = append(dst, slicePort{name: name, port: uint16(*p.Port), proto: proto})
	}
	return dst
}

// endpointHost turns one endpoint into a host with no port yet, or reports
// (and counts) why it is left out.
func endpointHost(ep *discoveryv1.Endpoint, want4 bool, namespace string, opts Options, sk *Counts) (host, bool) {
	if len(ep.Addresses) == 0 {
		sk.InvalidEndpoints++
		return host{}, false
	}
	addr, err := netip.ParseAddr(ep.Addresses[0])
	// Envoy parses addresses with inet_pton, which knows no zones; a zoned
	// address would get the whole CLA NACKed. IPv4-mapped addresses in an
	// IPv6 slice would dodge deduplication with the same IPv4 endpoint.
	if err != nil || addr.Zone() != "" || addr.Is4In6() || addr.Is4() != want4 {
		sk.InvalidEndpoints++
		return host{}, false
	}
	h := host{
		key:   hostKey{addr: addr},
		state: classify(ep.Conditions),
		zone:  deref(ep.Zone),
		node:  deref(ep.NodeName),
	}
	if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
		h.pod, h.podNS = ref.Name, cmp.Or(ref.Namespace, namespace)
	}
	if !utf8.ValidString(h.zone) || !utf8.ValidString(h.node) || !utf8.ValidString(h.pod) || !utf8.ValidString(h.podNS) {
		sk.InvalidEndpoints++
		return host{}, false
	}
	if h.state == stateUnready && !opts.IncludeUnready {
		sk.UnreadyEndpoints++
		return host{}, false
	}
	return h, true
}

// compareHosts orders hosts as the CLA lists them: by group (priority, then
// zone), then by address, port and protocol. Keys are unique within a CLA, so
// the order is total and the input order cannot leak into the output.
func compareHosts(a, b *host) int {
	if c := cmp.Compare(a.state.priority(), b.state.priority()); c != 0 {
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

type metaBlock struct {
	md     corev3.Metadata
	st     structpb.Struct
	values [3]structpb.Value
	strs   [3]structpb.Value_StringValue
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

	// All addresses share one string, sliced per endpoint.
	var buf []byte
	ends := make([]int, len(hosts))
	nMeta := 0
	for i, h := range order {
		buf = h.key.addr.AppendTo(buf)
		ends[i] = len(buf)
		if h.pod != "" || h.node != "" {
			nMeta++
		}
	}
	addrs := string(buf)

	blocks := make([]lbBlock, len(hosts))
	metas := make([]metaBlock, nMeta)
	ptrs := make([]*endpointv3.LbEndpoint, len(hosts))
	start := 0
	for i, h := range order {
		b := &blocks[i]
		b.port.PortValue = uint32(h.key.port)
		b.sock.Protocol = h.key.proto
		b.sock.Address, start = addrs[start:ends[i]], ends[i]
		b.sock.PortSpecifier = &b.port
		b.sa.SocketAddress = &b.sock
		b.addr.Address = &b.sa
		b.ep.Address = &b.addr
		b.ep.Hostname = h.pod
		b.id.Endpoint = &b.ep
		b.lb.HostIdentifier = &b.id
		b.lb.HealthStatus = corev3.HealthStatus_HEALTHY
		if h.state == stateUnready {
			b.lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
		}
		if h.pod != "" || h.node != "" {
			b.lb.Metadata = fillMetadata(&metas[0], h)
			metas = metas[1:]
		}
		ptrs[i] = &b.lb
	}

	next := PriorityReady // the lowest priority not emitted yet
	for len(order) > 0 {
		prio, zone := order[0].state.priority(), order[0].zone
		for ; next < prio; next++ {
			// Priorities must have no gaps (Envoy and gRPC clients NACK
			// them); an empty one makes Envoy fail over past it.
			cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
				Locality: &corev3.Locality{},
				Priority: next,
			})
		}
		next = prio + 1
		n := 1
		for n < len(order) && order[n].state.priority() == prio && order[n].zone == zone {
			n++
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality: &corev3.Locality{Zone: zone},
			Priority: prio,
			// Full slice expression: a caller appending to one group must
			// not overwrite the next group's endpoints.
			LbEndpoints: ptrs[:n:n],
		})
		order, ptrs = order[n:], ptrs[n:]
	}
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
