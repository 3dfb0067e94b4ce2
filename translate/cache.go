package translate

import (
	"maps"
	"slices"
	"strconv"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServiceCache translates one Service again and again, as its slices
// change, at a cost that follows what changed rather than the Service's
// size: [ServiceCache.Translate] returns exactly what [Service] returns for
// the same input (the same CLAs, byte for byte under deterministic
// marshalling, the same counts and the same Topologies), and also each
// CLA's encoding, assembled from pieces encoded once per endpoint.
//
// What it keeps, per EndpointSlice UID, is the slice's translated
// endpoints, reused while the slice's resourceVersion is unchanged (a
// slice without a UID or a resourceVersion is translated on every call);
// per port name, every address:port's candidates across slices, the
// winner of each (the same preference as [Service]), the dual-stack pairs
// of the winners, and the output endpoints in CLA order, each with its
// LbEndpoint message and its encoding. A call translates the slices whose
// resourceVersion changed, recomputes the address:ports they touch, and
// re-encodes only the endpoints whose output changed. A port none of
// whose endpoints changed returns the CLA, encoding and Topology of the
// previous call.
//
// # Ownership and concurrency
//
// A ServiceCache belongs to one Service (the namespace and name it was
// made for) and to one goroutine at a time: it is not safe for concurrent
// use, and its caller serializes calls (watch does, by owning one per
// Service key, which its workqueue hands to one worker at a time). What a
// call returns is immutable and shared with later calls' results (the
// LbEndpoint messages and encoded pieces are reused while they stay
// valid): callers must not modify it. It holds no goroutine and does no
// I/O. It trades memory for CPU: a 10,000-endpoint Service with two ports
// holds about 45 MB in its cache, 4.5 KB per endpoint, on top of the slices
// themselves (watch's BenchmarkServiceCacheMemory reports the figure), which is
// why it is meant for large Services.
type ServiceCache struct {
	namespace, name string
	keyOK           bool

	opts    cacheOpts
	entries map[types.UID]*sliceEntry // by slice UID; see sliceEntry.rv
	// contribs are what each slice, by identity (its UID, or a per-call
	// name when it has none), added to the ports at the previous call.
	contribs map[string]*contribution
	ports    map[string]*portState
}

// NewServiceCache returns an empty cache for the Service namespace/name.
func NewServiceCache(namespace, name string) *ServiceCache {
	return &ServiceCache{
		namespace: namespace,
		name:      name,
		keyOK:     validKeyPart(namespace) && validKeyPart(name),
		entries:   make(map[types.UID]*sliceEntry),
		contribs:  make(map[string]*contribution),
		ports:     make(map[string]*portState),
	}
}

// cacheOpts is what of Options a cached slice depends on; a change clears
// the cache.
type cacheOpts struct {
	includeUnready, local, regions bool
	family                         IPFamily
}

// sliceEntry is one slice translated on its own: its counts, its votes on
// port protocols, its ports before the vote and its hosts without a port.
type sliceEntry struct {
	rv       string
	accepted bool
	skipped  SkipCounts
	created  metav1.Time
	nEps     int
	votes    []portVote
	ports    []slicePort // hosts is unused here
	protos   []corev1.Protocol
	hosts    []host
	// regions are the node regions the hosts were built with.
	regions []nodeRegion
}

type portVote struct {
	name  string
	proto corev1.Protocol
}

type nodeRegion struct{ node, region string }

// contribution is a slice's entry and the mask of its ports that passed
// the protocol vote, as added to the ports.
type contribution struct {
	entry *sliceEntry
	mask  [2]uint64 // ports by index; a slice has at most 100
}

// portState is one port name's hosts across slices.
type portState struct {
	slices int // contributions carrying the port (it exists while > 0)
	cands  int // candidates in keys, for DuplicateEndpoints
	keys   map[hostKey]*keyState
	pairs  map[pairKey]*pairSlot // winners with a targetRef, under IPFamilyDual
	outs   map[hostKey]*outEntry // by the output host's key
	order  []*outEntry           // outs in CLA order
	hinted int                   // outs with hints

	// pending holds the keys whose candidates changed since settle.
	pending map[hostKey]struct{}
	changed bool // outputs changed since the last assembly
	cla     *endpointv3.ClusterLoadAssignment
	enc     [][]byte
	topo    *Topology
}

type cand struct {
	c          *contribution
	port, host int32
}

type keyState struct {
	cands []cand
	win   *host
}

// pairSlot holds, per family (0 IPv4, 1 IPv6), the winners sharing a
// pairKey.
type pairSlot struct{ keys [2][]hostKey }

// outEntry is one LbEndpoint of the CLA, with its message and its encoding
// as an element of LocalityLbEndpoints.lb_endpoints, built when first
// needed.
type outEntry struct {
	h   host
	lb  *endpointv3.LbEndpoint
	enc []byte
}

// maxMaskPorts is how many ports a contribution's mask can hold; a slice
// with more (the API allows 100) is treated as changed on every call.
const maxMaskPorts = 128

// Translate returns what Service(namespace, name, endpointSlices, opts)
// returns, and sets Result.Encoded. The namespace and name are the
// cache's. Calls with different Options (other than NodeRegion, whose
// answers are checked on every call) start from an empty cache.
func (c *ServiceCache) Translate(endpointSlices []*discoveryv1.EndpointSlice, opts Options) Result {
	co := cacheOpts{includeUnready: opts.IncludeUnready, local: opts.InternalTrafficLocal, regions: opts.NodeRegion != nil, family: opts.Family}
	if co != c.opts {
		*c = *NewServiceCache(c.namespace, c.name)
		c.opts = co
	}
	var res Result
	regions := make(map[string]string)
	regionOf := func(node string) string {
		r, ok := regions[node]
		if !ok {
			r = opts.NodeRegion(node)
			regions[node] = r
		}
		return r
	}

	// Entries: reuse those whose resourceVersion and node regions are
	// unchanged, translate the others.
	type input struct {
		id    string
		entry *sliceEntry
	}
	inputs := make([]input, 0, len(endpointSlices))
	seen := make(map[types.UID]bool, len(endpointSlices))
	for i, s := range endpointSlices {
		if s == nil {
			res.Skipped.InvalidSlices++
			continue
		}
		cacheable := s.UID != "" && s.ResourceVersion != "" && !seen[s.UID]
		var e *sliceEntry
		if cacheable {
			seen[s.UID] = true
			e = c.entries[s.UID]
			if e != nil && (e.rv != s.ResourceVersion || !e.regionsHold(regionOf)) {
				e = nil
			}
		}
		if e == nil {
			e = c.newEntry(s, opts, regions)
			if cacheable {
				c.entries[s.UID] = e
			}
		}
		id := string(s.UID)
		if !cacheable {
			id = "\x00" + strconv.Itoa(i) // never a UID: only this call knows it
		}
		inputs = append(inputs, input{id: id, entry: e})
	}
	for uid := range c.entries {
		if !seen[uid] {
			delete(c.entries, uid)
		}
	}

	// Protocol votes over every slice of the Service.
	protos := make(map[string]*protocolVote)
	for _, in := range inputs {
		e := in.entry
		for _, v := range e.votes {
			pv := protos[v.name]
			if pv == nil {
				pv = &protocolVote{}
				protos[v.name] = pv
			}
			pv.add(v.proto, e.created, e.nEps)
		}
	}

	// Contributions: what each slice adds once the vote is applied.
	current := make(map[string]bool, len(inputs))
	for _, in := range inputs {
		e := in.entry
		res.Skipped.add(e.skipped)
		if !e.accepted {
			continue
		}
		var mask [2]uint64
		for i, p := range e.ports {
			if !protos[p.name].keeps(e.protos[i]) {
				res.Skipped.MixedProtocolPorts++
				continue
			}
			if i < maxMaskPorts {
				mask[i/64] |= 1 << (i % 64)
			}
		}
		current[in.id] = true
		old := c.contribs[in.id]
		if old != nil && old.entry == e && old.mask == mask && len(e.ports) <= maxMaskPorts {
			continue
		}
		if old != nil {
			c.remove(old)
		}
		nc := &contribution{entry: e, mask: mask}
		if len(e.ports) > maxMaskPorts {
			nc.mask = [2]uint64{}
			for i, p := range e.ports {
				if protos[p.name].keeps(e.protos[i]) && i < maxMaskPorts {
					nc.mask[i/64] |= 1 << (i % 64)
				}
			}
		}
		c.contribs[in.id] = nc
		c.add(nc)
	}
	for id, old := range c.contribs {
		if !current[id] {
			c.remove(old)
			delete(c.contribs, id)
		}
	}

	// Ports: settle the changed ones and assemble their CLAs.
	names := make([]string, 0, len(c.ports))
	for name, ps := range c.ports {
		if ps.slices == 0 {
			delete(c.ports, name)
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ps := c.ports[name]
		ps.settle(opts.Family == IPFamilyDual, c.namespace)
		res.Skipped.DuplicateEndpoints += ps.cands - len(ps.keys)
		if ps.changed || ps.cla == nil {
			ps.assemble(ClusterName(c.namespace, c.name, name), opts.InternalTrafficLocal)
			ps.changed = false
		}
		res.CLAs = append(res.CLAs, ps.cla)
		res.Encoded = append(res.Encoded, ps.enc)
		if ps.topo != nil {
			if res.Topologies == nil {
				res.Topologies = make(map[string]*Topology)
			}
			res.Topologies[ps.cla.ClusterName] = ps.topo
		}
	}
	return res
}

func (s *SkipCounts) add(o SkipCounts) {
	s.InvalidSlices += o.InvalidSlices
	s.ForeignSlices += o.ForeignSlices
	s.FQDNSlices += o.FQDNSlices
	s.OtherFamilySlices += o.OtherFamilySlices
	s.UnnumberedPorts += o.UnnumberedPorts
	s.IncompletePorts += o.IncompletePorts
	s.MixedProtocolPorts += o.MixedProtocolPorts
	s.SCTPPorts += o.SCTPPorts
	s.InvalidPorts += o.InvalidPorts
	s.InvalidEndpoints += o.InvalidEndpoints
	s.UnreadyEndpoints += o.UnreadyEndpoints
	s.DuplicateEndpoints += o.DuplicateEndpoints
}

// regionsHold reports whether every node region e was built with is still
// the node's region.
func (e *sliceEntry) regionsHold(regionOf func(string) string) bool {
	for _, nr := range e.regions {
		if regionOf(nr.node) != nr.region {
			return false
		}
	}
	return true
}

// newEntry translates one slice on its own, as Service's loops do.
func (c *ServiceCache) newEntry(s *discoveryv1.EndpointSlice, opts Options, regions map[string]string) *sliceEntry {
	e := &sliceEntry{rv: s.ResourceVersion}
	if !c.keyOK || s.Namespace != c.namespace || s.Labels[ServiceNameLabel] != c.name {
		e.skipped.ForeignSlices++
		return e
	}
	var want4 bool
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4:
		want4 = true
	case discoveryv1.AddressTypeIPv6:
	case discoveryv1.AddressTypeFQDN:
		e.skipped.FQDNSlices++
		return e
	default:
		e.skipped.InvalidSlices++
		return e
	}
	if !opts.Family.serves(s.AddressType) {
		e.skipped.OtherFamilySlices++
		return e
	}
	e.accepted = true
	// Only accepted slices vote (IPFamily.translates says why).
	e.created, e.nEps = s.CreationTimestamp, len(s.Endpoints)
	for _, p := range s.Ports {
		if p.Protocol != nil && (*p.Protocol == corev1.ProtocolTCP || *p.Protocol == corev1.ProtocolUDP) {
			e.votes = append(e.votes, portVote{name: deref(p.Name), proto: *p.Protocol})
		}
	}
	// Every port before the vote: slicePorts with a vote that keeps all.
	for _, p := range s.Ports {
		n := len(e.ports)
		e.ports = slicePorts(e.ports, []discoveryv1.EndpointPort{p}, nil, &e.skipped)
		if len(e.ports) > n {
			e.protos = append(e.protos, *p.Protocol)
		}
	}
	e.hosts = make([]host, 0, len(s.Endpoints))
	for i := range s.Endpoints {
		if h, ok := endpointHost(&s.Endpoints[i], want4, c.namespace, opts, regions, &e.skipped); ok {
			e.hosts = append(e.hosts, h)
		}
	}
	if opts.NodeRegion != nil {
		seen := make(map[string]bool)
		for i := range s.Endpoints {
			if n := deref(s.Endpoints[i].NodeName); n != "" && !seen[n] {
				seen[n] = true
				if r, ok := regions[n]; ok {
					e.regions = append(e.regions, nodeRegion{node: n, region: r})
				}
			}
		}
	}
	return e
}

func (ct *contribution) ports(yield func(int, slicePort) bool) {
	for i, p := range ct.entry.ports {
		if i < maxMaskPorts && ct.mask[i/64]&(1<<(i%64)) != 0 {
			if !yield(i, p) {
				return
			}
		}
	}
}

func (c *ServiceCache) add(ct *contribution) {
	for pi, p := range ct.ports {
		ps := c.ports[p.name]
		if ps == nil {
			ps = &portState{
				keys: make(map[hostKey]*keyState, len(ct.entry.hosts)),
				outs: make(map[hostKey]*outEntry, len(ct.entry.hosts)),
			}
			c.ports[p.name] = ps
		}
		ps.slices++
		for hi := range ct.entry.hosts {
			k := hostKey{addr: ct.entry.hosts[hi].key.addr, port: p.port, proto: p.proto}
			ks := ps.keys[k]
			if ks == nil {
				ks = &keyState{cands: make([]cand, 0, 1)}
				ps.keys[k] = ks
			}
			ks.cands = append(ks.cands, cand{c: ct, port: int32(pi), host: int32(hi)})
			ps.cands++
			ps.dirty(k)
		}
	}
}

func (c *ServiceCache) remove(ct *contribution) {
	for pi, p := range ct.ports {
		ps := c.ports[p.name]
		ps.slices--
		for hi := range ct.entry.hosts {
			k := hostKey{addr: ct.entry.hosts[hi].key.addr, port: p.port, proto: p.proto}
			ks := ps.keys[k]
			ks.cands = slices.DeleteFunc(ks.cands, func(x cand) bool {
				return x.c == ct && x.port == int32(pi) && x.host == int32(hi)
			})
			ps.cands--
			ps.dirty(k)
		}
	}
}

func (ps *portState) dirty(k hostKey) {
	if ps.pending == nil {
		ps.pending = make(map[hostKey]struct{})
	}
	ps.pending[k] = struct{}{}
}

func (ps *portState) pairKeyOf(k hostKey, h *host, namespace string) pairKey {
	return pairKey{ref: refOf(h.ref, namespace), port: k.port, proto: k.proto}
}

// settle recomputes the winners of the pending keys, their dual-stack
// pairs and the outputs they change, keeping order sorted.
func (ps *portState) settle(dual bool, namespace string) {
	if len(ps.pending) == 0 {
		return
	}
	touched := make(map[hostKey]struct{}, len(ps.pending))
	markSlot := func(s *pairSlot) {
		for _, f := range s.keys {
			for _, k := range f {
				touched[k] = struct{}{}
			}
		}
	}
	for k := range ps.pending {
		touched[k] = struct{}{}
		ks := ps.keys[k]
		var old, win *host
		if ks != nil {
			old = ks.win
			for _, cd := range ks.cands {
				if h := &cd.c.entry.hosts[cd.host]; win == nil || preferred(*h, *win) {
					win = h
				}
			}
			if len(ks.cands) == 0 {
				delete(ps.keys, k)
			} else {
				ks.win = win
			}
		}
		if !dual || old == win {
			continue
		}
		fam := btoi(!k.addr.Is4())
		if old != nil && old.ref != nil {
			pk := ps.pairKeyOf(k, old, namespace)
			s := ps.pairs[pk]
			s.keys[fam] = slices.DeleteFunc(s.keys[fam], func(x hostKey) bool { return x == k })
			markSlot(s)
			if len(s.keys[0])+len(s.keys[1]) == 0 {
				delete(ps.pairs, pk)
			}
		}
		if win != nil && win.ref != nil {
			if ps.pairs == nil {
				ps.pairs = make(map[pairKey]*pairSlot)
			}
			pk := ps.pairKeyOf(k, win, namespace)
			s := ps.pairs[pk]
			if s == nil {
				s = &pairSlot{}
				ps.pairs[pk] = s
			}
			s.keys[fam] = append(s.keys[fam], k)
			markSlot(s)
		}
	}
	ps.pending = nil // not clear: a first build's map would stay at its size

	// Many changes (the first call, a big edit): sort once at the end
	// rather than move the order per change.
	bulk := len(touched) > len(ps.order)/4+32
	for k := range touched {
		nh, ok := ps.output(k, dual, namespace)
		old := ps.outs[k]
		if old != nil && ok && sameOutput(&old.h, &nh) {
			continue
		}
		ps.changed = true
		if old != nil {
			if !bulk {
				i, found := slices.BinarySearchFunc(ps.order, old, compareEntries)
				if found && ps.order[i] == old {
					ps.order = slices.Delete(ps.order, i, i+1)
				} else {
					bulk = true // cannot happen (keys are unique); rebuild the order rather than guess
				}
			}
			delete(ps.outs, k)
			if hinted(&old.h) {
				ps.hinted--
			}
		}
		if ok {
			e := &outEntry{h: nh}
			ps.outs[k] = e
			if !bulk {
				i, _ := slices.BinarySearchFunc(ps.order, e, compareEntries)
				ps.order = slices.Insert(ps.order, i, e)
			}
			if hinted(&e.h) {
				ps.hinted++
			}
		}
	}
	if bulk {
		ps.order = slices.AppendSeq(ps.order[:0], maps.Values(ps.outs))
		slices.SortFunc(ps.order, compareEntries)
	}
}

func compareEntries(a, b *outEntry) int { return compareHosts(&a.h, &b.h) }

func hinted(h *host) bool { return h.forZones != "" || h.forNodes != "" }

// output is the host emitted for key k: its winner, merged with its other
// family's address when the pair is unambiguous, or none (no winner, or
// the IPv6 half of a pair).
func (ps *portState) output(k hostKey, dual bool, namespace string) (host, bool) {
	ks := ps.keys[k]
	if ks == nil || ks.win == nil {
		return host{}, false
	}
	h := *ks.win
	h.key = k
	if dual && h.ref != nil {
		if s := ps.pairs[ps.pairKeyOf(k, &h, namespace)]; s != nil && len(s.keys[0]) == 1 && len(s.keys[1]) == 1 {
			if !k.addr.Is4() {
				return host{}, false
			}
			h.extra = s.keys[1][0].addr
		}
	}
	return h, true
}

// sameOutput reports whether a and b give the same LbEndpoint at the same
// place in the CLA and the same Topology behaviour.
func sameOutput(a, b *host) bool {
	return a.key == b.key && a.state == b.state && a.prio == b.prio && a.region == b.region && a.zone == b.zone &&
		a.hostname == b.hostname && a.pod == b.pod && a.podNS == b.podNS && a.node == b.node &&
		a.forZones == b.forZones && a.forNodes == b.forNodes && a.extra == b.extra && compareRefs(a.ref, b.ref) == 0
}

// assemble builds the port's CLA from its ordered outputs, as buildCLA
// does, and its encoding from the outputs' encoded pieces.
func (ps *portState) assemble(name string, local bool) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	enc := make([][]byte, 0, len(ps.order)+16)
	enc = append(enc, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), name))
	encOK := true
	ptrs := make([]*endpointv3.LbEndpoint, len(ps.order))
	for i, e := range ps.order {
		if e.lb == nil {
			e.lb = lbEndpointOf(&e.h)
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.lb)
			if err == nil {
				e.enc = protowire.AppendBytes(protowire.AppendTag(make([]byte, 0, len(b)+4), 2, protowire.BytesType), b)
			}
		}
		if e.enc == nil {
			encOK = false
		}
		ptrs[i] = e.lb
	}
	group := func(region, zone string, prio, weight uint32, members []*outEntry) {
		var loc []byte
		if region != "" {
			loc = protowire.AppendString(protowire.AppendTag(loc, 1, protowire.BytesType), region)
		}
		if zone != "" {
			loc = protowire.AppendString(protowire.AppendTag(loc, 2, protowire.BytesType), zone)
		}
		var trailer []byte
		if weight != 0 {
			w := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(weight))
			trailer = protowire.AppendBytes(protowire.AppendTag(trailer, 3, protowire.BytesType), w)
		}
		if prio != 0 {
			trailer = protowire.AppendVarint(protowire.AppendTag(trailer, 5, protowire.VarintType), uint64(prio))
		}
		size := protowire.SizeTag(1) + protowire.SizeBytes(len(loc)) + len(trailer)
		for _, e := range members {
			size += len(e.enc)
		}
		header := protowire.AppendTag(nil, 2, protowire.BytesType)
		header = protowire.AppendVarint(header, uint64(size))
		header = protowire.AppendBytes(protowire.AppendTag(header, 1, protowire.BytesType), loc)
		enc = append(enc, header)
		for _, e := range members {
			enc = append(enc, e.enc)
		}
		if len(trailer) > 0 {
			enc = append(enc, trailer)
		}
	}

	appendLocalityGroups(cla, len(ps.order), func(i int) *host { return &ps.order[i].h }, ptrs,
		func(g *endpointv3.LocalityLbEndpoints, start, count int) {
			group(g.Locality.Region, g.Locality.Zone, g.Priority, uint32(count), ps.order[start:start+count])
		})
	ps.cla = cla
	ps.enc = enc
	if !encOK {
		ps.enc = nil
	}
	ps.topo = nil
	if local || ps.hinted > 0 {
		hosts := make([]host, len(ps.order))
		for i, e := range ps.order {
			hosts[i] = e.h
		}
		ps.topo = newTopology(name, hosts, local)
	}
}

// lbBundle holds the messages of one LbEndpoint and its metadata, in one
// allocation; an additional address takes another.
type lbBundle struct {
	b lbBlock
	m metaBlock
}

// lbEndpointOf builds one host's LbEndpoint as buildCLA does.
func lbEndpointOf(h *host) *endpointv3.LbEndpoint {
	u := &lbBundle{}
	var x *extraBlock
	var extraAddr string
	if h.extra.IsValid() {
		x, extraAddr = &extraBlock{}, h.extra.String()
	}
	var m *metaBlock
	if h.pod != "" || h.node != "" {
		m = &u.m
	}
	return u.b.fill(h, h.key.addr.String(), x, extraAddr, m)
}
