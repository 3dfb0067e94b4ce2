package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
)

// tracker attributes each applied CLA version to the change that produced
// it (by the marker control.BuildCLA puts in every CLA, or, for a CLA sent
// slice by slice, by its endpoints' print) and records when the last
// subscriber of a change applied it, or a later change of the same name.
type tracker struct {
	index       map[string]int32 // read-only after newTracker
	subscribers []int32          // read-only after newTracker
	sliced      int32            // the CLA sent slice by slice, or -1

	armed atomic.Bool

	printMu sync.Mutex // guards prints and byVersion
	// prints maps the print of the sliced CLA's endpoints after a change
	// to the change; byVersion remembers, per version served, the change
	// its content was (0: none), so that the print of a version is taken
	// once for the whole fleet.
	prints    map[uint64]uint32
	byVersion map[string]uint32

	mu      sync.Mutex // guards everything below
	last    [][]uint32 // per client, per name: latest change id applied
	pending [][]*pendingChange
	sent    int
	done    int
	sealed  bool
	lat     []time.Duration
	allDone chan struct{}
}

type pendingChange struct {
	id        uint32
	at        time.Time
	remaining int32
}

func newTracker(g *gen) *tracker {
	t := &tracker{
		index:       make(map[string]int32, len(g.names)),
		subscribers: g.subscribers,
		last:        make([][]uint32, len(g.subs)),
		pending:     make([][]*pendingChange, len(g.names)),
		allDone:     make(chan struct{}),
		sliced:      -1,
		prints:      make(map[uint64]uint32),
		byVersion:   make(map[string]uint32),
	}
	if g.sliced(0) {
		t.sliced = 0
	}
	for i, n := range g.names {
		t.index[n] = int32(i)
	}
	for i := range t.last {
		t.last[i] = make([]uint32, len(g.names))
	}
	return t
}

// register records a change about to be sent.
func (t *tracker) register(name int, id uint64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent++
	t.pending[name] = append(t.pending[name], &pendingChange{id: uint32(id), at: at, remaining: t.subscribers[name]})
}

// registerPrint records that the sliced CLA's endpoints have print p after
// change id (control.EndpointsPrint); call it before the change is sent.
func (t *tracker) registerPrint(p uint64, id uint64) {
	t.printMu.Lock()
	defer t.printMu.Unlock()
	t.prints[p] = uint32(id)
}

// changeOf returns the change whose content cla, served as version of
// CLA name, is: by its marker, or, for the sliced CLA, by its print.
func (t *tracker) changeOf(name int32, version string, cla *endpointv3.ClusterLoadAssignment) (uint32, bool) {
	if name != t.sliced {
		id, ok := control.ChangeID(cla)
		return uint32(id), ok
	}
	t.printMu.Lock()
	id, seen := t.byVersion[version]
	t.printMu.Unlock()
	if !seen {
		// Every client of a version computes the same answer: whoever is
		// first stores it, outside the lock for the walk over the CLA.
		if p, ok := control.CLAPrint(cla); ok {
			t.printMu.Lock()
			id = t.prints[p]
			t.byVersion[version] = id
			t.printMu.Unlock()
		}
	}
	return id, id > 0
}

type applied struct {
	name int32
	id   uint32
}

// apply records that client applied the given versions at time at.
func (t *tracker) apply(client int, items []applied, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, it := range items {
		prev := t.last[client][it.name]
		if it.id <= prev {
			continue
		}
		t.last[client][it.name] = it.id
		q := t.pending[it.name]
		for _, p := range q {
			if p.id > it.id {
				break
			}
			if p.id > prev {
				p.remaining--
			}
		}
		// Changes complete in order: whoever applied a later change of a
		// name also applied (or skipped past) every earlier one.
		for len(q) > 0 && q[0].remaining <= 0 {
			t.lat = append(t.lat, at.Sub(q[0].at))
			t.done++
			q[0] = nil
			q = q[1:]
		}
		t.pending[it.name] = q
	}
	t.checkDoneLocked()
}

// seal says no more changes will be registered.
func (t *tracker) seal() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sealed = true
	t.checkDoneLocked()
}

func (t *tracker) checkDoneLocked() {
	if t.sealed && t.done == t.sent {
		select {
		case <-t.allDone:
		default:
			close(t.allDone)
		}
	}
}

// result returns the number of changes sent and delivered, and the
// latencies of those delivered.
func (t *tracker) result() (sent, done int, lat []time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent, t.done, append([]time.Duration(nil), t.lat...)
}

// fleet is the simulated Envoys of one run.
type fleet struct {
	g       *gen
	clients []*envoysim.Client
	ef      *envoyfleet.Fleet
	tr      *tracker
}

// maxRecvMsgSize lifts gRPC-Go's 4 MiB default: Envoy has no such limit by
// default, and a go-control-plane server sends a whole wildcard state in one
// response.
const maxRecvMsgSize = 1 << 30

func startFleet(ctx context.Context, addr string, g *gen) (*fleet, error) {
	f := &fleet{g: g, tr: newTracker(g)}
	ef, err := envoyfleet.Start(ctx, envoyfleet.Options{
		Size:        len(g.subs),
		Target:      addr,
		DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize))},
		Subscribe:   g.subscribedNames,
		OnApply:     f.onApply,
		Configure: func(i int, cfg *envoysim.Config) {
			cfg.NodeID = fmt.Sprintf("envoy-%04d", i)
			cfg.Cluster = "bench"
			cfg.Wildcard = g.subs[i] == nil
			if g.w.Zones > 0 {
				cfg.Locality = &corev3.Locality{Zone: control.ZoneName(i % g.w.Zones)}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	f.ef, f.clients = ef, ef.Clients
	return f, nil
}

func (f *fleet) onApply(client int, c *envoysim.Client, a envoysim.Applied) {
	if !f.tr.armed.Load() || len(a.Updated) == 0 {
		return
	}
	items := make([]applied, 0, len(a.Updated))
	for _, u := range a.Updated {
		// A change is delivered when the client routes with it. OnApply runs
		// on the client's receive goroutine, the only one that changes its
		// routes (the bench never unsubscribes): Route returns exactly what
		// was just applied.
		r, ok := c.Route(u.Name)
		if !ok {
			continue
		}
		idx, known := f.tr.index[u.Name]
		if !known {
			continue
		}
		id, ok := f.tr.changeOf(idx, u.Version, r.CLA)
		if !ok {
			continue
		}
		items = append(items, applied{name: idx, id: id})
	}
	f.tr.apply(client, items, a.ReceivedAt)
}

// waitSynced waits until every client routes with a CLA for everything it
// wants. Every name the bench subscribes to has a CLA, so no route is an
// empty stand-in for a missing one.
func (f *fleet) waitSynced(ctx context.Context) error {
	err := f.ef.WaitEach(ctx, func(i int) func(envoysim.State) bool {
		want := f.g.expected(i)
		return func(s envoysim.State) bool { return s.RouteLen() >= want }
	})
	if err != nil {
		return fmt.Errorf("fleet sync: %w", err)
	}
	return nil
}

// fleetStats sums the clients' counters.
type fleetStats struct {
	Responses, Resources, Bytes, Requests, Streams uint64
	Violations                                     int
	Samples                                        []string
	perClientStreams                               []uint64
}

func (f *fleet) stats() fleetStats {
	sum := f.ef.Stats()
	s := fleetStats{
		Responses: sum.Responses, Resources: sum.Resources, Bytes: sum.Bytes,
		Requests: sum.Requests, Streams: sum.Streams, Violations: len(sum.Violations),
		perClientStreams: make([]uint64, len(f.clients)),
	}
	for i, c := range f.clients {
		st := c.Stats()
		s.perClientStreams[i] = st.Streams
		for _, v := range st.Violations {
			if len(s.Samples) < 5 {
				s.Samples = append(s.Samples, fmt.Sprintf("envoy-%04d: %s", i, v))
			}
		}
	}
	return s
}

// waitReconnected waits until every client opened a stream beyond before,
// then until the fleet has been quiet (no response, no request) for quiet.
func (f *fleet) waitReconnected(ctx context.Context, before fleetStats, quiet time.Duration) (reconnected time.Time, err error) {
	err = wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		for i, n := range f.stats().perClientStreams {
			if n <= before.perClientStreams[i] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("fleet reconnect: %w", err)
	}
	reconnected = time.Now()
	last, since := f.stats(), time.Now()
	err = wait.PollUntilContextCancel(ctx, quiet/10, false, func(context.Context) (bool, error) {
		if s := f.stats(); s.Responses != last.Responses || s.Requests != last.Requests {
			last, since = s, time.Now()
		}
		return time.Since(since) >= quiet, nil
	})
	if err != nil {
		return reconnected, fmt.Errorf("fleet reconnect: waiting for quiet: %w", err)
	}
	return reconnected, nil
}

// checkUnchanged returns an error unless every client is where the
// generator's state says, in both of its views; the reconnect workload calls
// it once the fleet has reconnected to a restarted server and nothing
// changed. extra is how many names beyond the workload's each client holds
// (the storm's canary).
//
//   - The xDS state (Held) has exactly one resource per name the client
//     wants. A removal would have dropped one, and the client would not
//     declare it on its next reconnect; anything else the server sent would
//     have added one. A server that answers a name it has no resource for
//     with an empty CLA (deltaeds does) would make the count miss that, but
//     every name the bench subscribes to has a CLA, so here it is exact.
//   - What the client routes to (Route) is, for every name it wants, exactly
//     that name's endpoints. Counting routes would prove nothing, since
//     Envoy keeps routing through a removal; an empty or wrong CLA sent on
//     reconnect is what this catches.
func (f *fleet) checkUnchanged(extra int) error {
	seen := make(map[control.Endpoint]struct{})
	for i, c := range f.clients {
		if got, want := len(c.HeldAll()), f.g.expected(i)+extra; got != want {
			return fmt.Errorf("envoy-%04d holds %d CLAs, want %d", i, got, want)
		}
		routes := c.Routes()
		for k := range f.g.expected(i) {
			idx := k
			if f.g.subs[i] != nil {
				idx = f.g.subs[i][k]
			}
			name := f.g.names[idx]
			r, ok := routes[name]
			if !ok {
				return fmt.Errorf("envoy-%04d routes nothing for %s", i, name)
			}
			if err := sameEndpoints(r.CLA, f.g.eps[idx], seen); err != nil {
				return fmt.Errorf("envoy-%04d routes %s: %w", i, name, err)
			}
		}
	}
	return nil
}

// sameEndpoints returns an error unless cla holds exactly the endpoints
// want, in any order. seen is scratch space, reused between calls.
func sameEndpoints(cla *endpointv3.ClusterLoadAssignment, want []control.Endpoint, seen map[control.Endpoint]struct{}) error {
	clear(seen)
	n := 0
	for _, l := range cla.GetEndpoints() {
		for _, lb := range l.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			a, err := netip.ParseAddr(sa.GetAddress())
			if err != nil {
				return fmt.Errorf("endpoint address %q: %w", sa.GetAddress(), err)
			}
			seen[control.Endpoint{Addr: a, Port: sa.GetPortValue()}] = struct{}{}
			n++
		}
	}
	if n != len(want) {
		return fmt.Errorf("%d endpoints, want %d", n, len(want))
	}
	for _, e := range want {
		if _, ok := seen[e]; !ok {
			return fmt.Errorf("endpoint %s:%d missing", e.Addr, e.Port)
		}
	}
	return nil
}

// close stops every client and waits for them.
func (f *fleet) close() { f.ef.Close() }

var errIncomplete = errors.New("not every change reached every subscriber in time")
