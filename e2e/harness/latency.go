package harness

import (
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Tracker measures propagation latency end to end: from the moment a pod change was made (the
// API call that made it returned) to the moment each client received the first CLA that
// reflects it. A change is reflected when the pod's IP is at priority 0 (PodReady), at priority
// 1 or gone (PodTerminating: a client that skipped the draining state has moved past it), or
// absent (PodGone).
//
// A change is registered twice: by Observe just before the API call, so that no client can see
// it before the tracker looks for it, and by Made once the call returned, which sets the time it
// is measured from. Time spent waiting for the API client's rate limiter is therefore not
// counted, and a client that saw the change before the call returned counts as 0. Safe for
// concurrent use.
type Tracker struct {
	clients   int
	clusterOf func(service string) string

	mu      sync.Mutex
	pending map[string][]*change // by CLA name, oldest first
	byPod   map[podChange]*change
	done    []*change
}

type podChange struct {
	kind EventKind
	ip   netip.Addr
}

type change struct {
	kind   EventKind
	ip     netip.Addr
	at     time.Time   // when the change was made (Made), or requested until then
	seenAt []time.Time // by client; zero until seen
	left   int         // clients still to see it
	// sliceAt is when an EndpointSlice watcher first saw it (SlicesChanged), zero until then.
	sliceAt time.Time
}

// NewTracker tracks changes for a fleet of n clients; clusterOf maps an Event's Service to the
// CLA name that carries its pods.
func NewTracker(n int, clusterOf func(service string) string) *Tracker {
	return &Tracker{clients: n, clusterOf: clusterOf, pending: make(map[string][]*change), byPod: make(map[podChange]*change)}
}

// Observe registers a change about to be made; pass it as RolloutOptions.Observe.
func (t *Tracker) Observe(ev Event) {
	ip, err := netip.ParseAddr(ev.Pod.IP)
	if err != nil {
		return
	}
	name := t.clusterOf(ev.Service)
	c := &change{kind: ev.Kind, ip: ip, at: ev.At, seenAt: make([]time.Time, t.clients), left: t.clients}
	t.mu.Lock()
	t.pending[name] = append(t.pending[name], c)
	t.byPod[podChange{ev.Kind, ip}] = c
	t.mu.Unlock()
}

// Made records when a change registered by Observe was made; pass it as RolloutOptions.Made.
func (t *Tracker) Made(ev Event) {
	ip, err := netip.ParseAddr(ev.Pod.IP)
	if err != nil {
		return
	}
	t.mu.Lock()
	if c := t.byPod[podChange{ev.Kind, ip}]; c != nil {
		c.at = ev.At
		delete(t.byPod, podChange{ev.Kind, ip})
	}
	t.mu.Unlock()
}

// Applied is told that client i received cla (named name) at `at`; call it from the client's
// OnApply with the CLA it now holds.
func (t *Tracker) Applied(i int, name string, cla *endpointv3.ClusterLoadAssignment, at time.Time) {
	prio := CLAState(cla)
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.pending[name]
	if len(list) == 0 {
		return
	}
	keep := list[:0]
	for _, c := range list {
		if c.seenAt[i].IsZero() && reflects(c, prio) {
			c.seenAt[i] = at
			c.left--
		}
		if c.left > 0 {
			keep = append(keep, c)
		} else {
			t.done = append(t.done, c)
		}
	}
	clear(list[len(keep):])
	t.pending[name] = keep
}

// SlicesChanged is told the endpoint state of service's EndpointSlices as a watcher heard it
// at `at` (see WatchSlices), to split the latency into the controller's part and deltaeds'.
func (t *Tracker) SlicesChanged(service string, st EndpointState, at time.Time) {
	name := t.clusterOf(service)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.pending[name] {
		if c.sliceAt.IsZero() && reflects(c, st) {
			c.sliceAt = at
		}
	}
}

func reflects(c *change, prio EndpointState) bool {
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
	// Count, P50, P99 and Max: from the change being made to each client holding it.
	Count         int
	P50, P99, Max time.Duration
	// Outstanding counts (change, client) pairs not yet seen.
	Outstanding int
	// Controller: from the change being made to its EndpointSlice being heard, per change.
	// Server: from the EndpointSlice being heard to each client holding it (deltaeds' part,
	// plus the watch's own delivery, which deltaeds pays too). Zero without SlicesChanged.
	ControllerP50, ControllerP99 time.Duration
	ServerP50, ServerP99         time.Duration
}

// Stats returns the quantiles of the samples so far: one per change and client that saw it.
func (t *Tracker) Stats() LatencyStats {
	t.mu.Lock()
	var s, ctl, srv []time.Duration
	add := func(c *change) {
		if !c.sliceAt.IsZero() {
			ctl = append(ctl, max(c.sliceAt.Sub(c.at), 0))
		}
		for _, seen := range c.seenAt {
			if !seen.IsZero() {
				s = append(s, max(seen.Sub(c.at), 0))
				if !c.sliceAt.IsZero() {
					srv = append(srv, max(seen.Sub(c.sliceAt), 0))
				}
			}
		}
	}
	for _, c := range t.done {
		add(c)
	}
	out := 0
	for _, list := range t.pending {
		for _, c := range list {
			add(c)
			out += c.left
		}
	}
	t.mu.Unlock()
	slices.Sort(s)
	slices.Sort(ctl)
	slices.Sort(srv)
	st := LatencyStats{Count: len(s), Outstanding: out}
	if len(s) > 0 {
		st.P50, st.P99, st.Max = quantile(s, 0.50), quantile(s, 0.99), s[len(s)-1]
	}
	if len(ctl) > 0 {
		st.ControllerP50, st.ControllerP99 = quantile(ctl, 0.50), quantile(ctl, 0.99)
	}
	if len(srv) > 0 {
		st.ServerP50, st.ServerP99 = quantile(srv, 0.50), quantile(srv, 0.99)
	}
	return st
}

// quantile returns the nearest-rank q-quantile of sorted samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
