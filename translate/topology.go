package translate

import (
	"slices"
	"strings"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// View is where a client runs: its zone and its Kubernetes node. Either may
// be empty (a client that does not tell).
type View struct {
	Zone, Node string
}

// Topology builds the variants of one CLA for where a client runs, following
// kube-proxy's reading of topology hints and internalTrafficPolicy
// (kubernetes pkg/proxy/topology.go, topologyModeFromHints and
// CategorizeEndpoints) where Envoy can do at least as well:
//
//   - Node hints (trafficDistribution PreferSameNode) apply to a client on
//     node N when every ready endpoint carries a node hint and at least one
//     is hinted for N; zone hints (PreferClose, PreferSameZone) to a client
//     in zone Z when every ready endpoint carries a zone hint and at least
//     one is hinted for Z.
//   - When they apply, the ready endpoints hinted for the client's node are
//     priority 0, then those hinted for its zone, then the other ready
//     endpoints, then the terminating fallback (then, under IncludeUnready,
//     the unready ones). kube-proxy drops the other ready endpoints; here
//     Envoy fails over to them only when the nearer priorities have nothing
//     healthy.
//   - internalTrafficPolicy Local gives a client on node N only N's
//     endpoints: ready at priority 0, terminating at 1 (unready at 2). None
//     is an empty CLA, as kube-proxy drops the traffic.
//   - A client that tells no place, or to which no rule applies, gets the
//     plain CLA.
//
// A Topology is immutable and safe for concurrent use.
type Topology struct {
	name  string
	hosts []host // shared with no one; read-only
	local bool

	// Hint completeness and coverage over the ready endpoints.
	zoneHinted, nodeHinted bool
	forZone, forNode       map[string]bool
}

// newTopology returns the Topology of the CLA name built from hosts, or nil
// when every client gets the plain CLA.
func newTopology(name string, hosts []host, local bool) *Topology {
	// The common case, no hints and no policy, allocates nothing.
	zoneHinted, nodeHinted, ready := true, true, false
	for i := range hosts {
		if h := &hosts[i]; h.state == stateReady {
			ready = true
			zoneHinted = zoneHinted && h.forZones != ""
			nodeHinted = nodeHinted && h.forNodes != ""
		}
	}
	// kube-proxy: with no ready endpoint, hints mean nothing.
	zoneHinted, nodeHinted = zoneHinted && ready, nodeHinted && ready
	if !local && !zoneHinted && !nodeHinted {
		return nil
	}
	t := &Topology{name: name, hosts: hosts, local: local, zoneHinted: zoneHinted, nodeHinted: nodeHinted,
		forZone: map[string]bool{}, forNode: map[string]bool{}}
	for i := range hosts {
		if h := &hosts[i]; h.state == stateReady {
			for _, z := range splitHints(h.forZones) {
				t.forZone[z] = true
			}
			for _, n := range splitHints(h.forNodes) {
				t.forNode[n] = true
			}
		}
	}
	return t
}

// mode is which rules apply to a view.
type mode struct {
	local      bool
	node, zone string // non-empty when node or zone hints apply
	applies    bool
}

func (t *Topology) mode(v View) mode {
	switch {
	case t == nil:
		return mode{}
	case t.local:
		return mode{local: true, node: v.Node, applies: v.Node != ""}
	}
	var m mode
	if t.nodeHinted && v.Node != "" && t.forNode[v.Node] {
		m.node, m.applies = v.Node, true
	}
	if t.zoneHinted && v.Zone != "" && t.forZone[v.Zone] {
		m.zone, m.applies = v.Zone, true
	}
	return m
}

// Key returns the name of the variant a client at v receives: "" for the
// plain CLA; otherwise a string that is equal for exactly the views that
// get equal CLAs (clients in one zone share a zone variant unless node
// rules apply to them). A nil Topology keys every view "".
func (t *Topology) Key(v View) string {
	m := t.mode(v)
	switch {
	case !m.applies:
		return ""
	case m.local:
		return "local:" + m.node
	case m.node != "" && m.zone != "":
		return "node:" + m.node + "\x00zone:" + m.zone
	case m.node != "":
		return "node:" + m.node
	}
	return "zone:" + m.zone
}

// CLA returns the variant for a client at v, or nil when it gets the plain
// CLA (Key(v) == ""). Equal views, and views with equal keys, give
// byte-identical CLAs under deterministic marshalling.
func (t *Topology) CLA(v View) *endpointv3.ClusterLoadAssignment {
	m := t.mode(v)
	if !m.applies {
		return nil
	}
	hosts := make([]host, 0, len(t.hosts))
	for _, h := range t.hosts {
		tier, ok := m.tier(&h)
		if !ok {
			continue
		}
		h.prio = tier
		hosts = append(hosts, h)
	}
	return buildCLA(t.name, hosts)
}

// tier is h's priority in the variant, and false when the variant leaves h
// out.
func (m mode) tier(h *host) (uint32, bool) {
	if m.local {
		if h.node != m.node {
			return 0, false
		}
		return h.state.priority(), true
	}
	// The ready tiers: node, zone, the rest, as far as each rule applies.
	var rest uint32
	if m.node != "" {
		rest++
	}
	if m.zone != "" {
		rest++
	}
	switch h.state {
	case stateReady:
		switch {
		case m.node != "" && hasHint(h.forNodes, m.node):
			return 0, true
		case m.zone != "" && hasHint(h.forZones, m.zone):
			return rest - 1, true
		}
		return rest, true
	case stateTerminating:
		return rest + 1, true
	}
	return rest + 2, true
}

// joinHints returns an endpoint's zone and node hints, each sorted,
// deduplicated and joined by "\x00".
func joinHints(hints *discoveryv1.EndpointHints) (zones, nodes string) {
	join := func(names []string) string {
		if len(names) == 0 {
			return ""
		}
		slices.Sort(names)
		return strings.Join(slices.Compact(names), "\x00")
	}
	var z, n []string
	for _, h := range hints.ForZones {
		if h.Name != "" {
			z = append(z, h.Name)
		}
	}
	for _, h := range hints.ForNodes {
		if h.Name != "" {
			n = append(n, h.Name)
		}
	}
	return join(z), join(n)
}

func splitHints(joined string) []string {
	if joined == "" {
		return nil
	}
	return strings.Split(joined, "\x00")
}

// hasHint reports whether name is one of the joined hints, without
// splitting them: it runs per host for every variant built.
func hasHint(joined, name string) bool {
	for joined != "" {
		var h string
		h, joined, _ = strings.Cut(joined, "\x00")
		if h == name {
			return true
		}
	}
	return false
}
