package harness

import (
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Tracker measures propagation latency end to end: from the moment a pod change was made (an
// Event's At, taken just before the API call) to the moment each client received the first CLA
// that reflects it. A change is reflected when the pod's IP is at priority 0 (PodReady), at
// priority 1 or gone (PodTerminating: a client that skipped the draining state has moved past
// it), or absent (PodGone). Safe for concurrent use.
type Tracker struct {
	clients   int
	clusterOf func(service string) string

	mu      sync.Mutex
	pending map[string][]*change // by CLA name, oldest first
	samples []time.Duration
}

type change struct {
	kind EventKind
	ip   netip.Addr
	at   time.Time
	seen []bool // by client
	left int    // clients still to see it
}

// NewTracker tracks changes for a fleet of n clients; clusterOf maps an Event's Service to the
// CLA name that carries its pods.
func NewTracker(n int, clusterOf func(service string) string) *Tracker {
	return &Tracker{clients: n, clusterOf: clusterOf, pending: make(map[string][]*change)}
}

// Observe records a change; pass it as RolloutOptions.Observe.
func (t *Tracker) Observe(ev Event) {
	ip, err := netip.ParseAddr(ev.Pod.IP)
	if err != nil {
		return
	}
	name := t.clusterOf(ev.Service)
	t.mu.Lock()
	t.pending[name] = append(t.pending[name], &change{kind: ev.Kind, ip: ip, at: ev.At, seen: make([]bool, t.clients), left: t.clients})
	t.mu.Unlock()
}

// Applied is told that client i received cla (named name) at `at`; call it from the client's
// OnApply with the CLA it now holds.
func (t *Tracker) Applied(i int, name string, cla *endpointv3.ClusterLoadAssignment, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.pending[name]
	if len(list) == 0 {
		return
	}
	prio := make(map[netip.Addr]uint32)
	for _, e := range Endpoints(cla) {
		if ip, err := netip.ParseAddr(e.IP); err == nil && UsableHealth(e.Health) {
			prio[ip] = e.Priority
		}
	}
	keep := list[:0]
	for _, c := range list {
		if !c.seen[i] && reflects(c, prio) {
			c.seen[i] = true
			c.left--
			t.samples = append(t.samples, max(at.Sub(c.at), 0))
		}
		if c.left > 0 {
			keep = append(keep, c)
		}
	}
	clear(list[len(keep):])
	t.pending[name] = keep
}

func reflects(c *change, prio map[netip.Addr]uint32) bool {
	p, present := prio[c.ip]
	switch c.kind {
	case PodReady:
		return present
	case PodTerminating:
		return !present || p > 0
	case PodGone:
		return !present
	}
	return false
}

// LatencyStats summarizes the samples so far.
type LatencyStats struct {
	Count         int
	P50, P99, Max time.Duration
	// Outstanding counts (change, client) pairs not yet seen.
	Outstanding int
}

// Stats returns the quantiles of the samples so far.
func (t *Tracker) Stats() LatencyStats {
	t.mu.Lock()
	s := slices.Clone(t.samples)
	out := 0
	for _, list := range t.pending {
		for _, c := range list {
			out += c.left
		}
	}
	t.mu.Unlock()
	slices.Sort(s)
	st := LatencyStats{Count: len(s), Outstanding: out}
	if len(s) > 0 {
		st.P50, st.P99, st.Max = quantile(s, 0.50), quantile(s, 0.99), s[len(s)-1]
	}
	return st
}

// quantile returns the nearest-rank q-quantile of sorted samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
