package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 12e: deltaeds SIGKILLed in the middle of rolling restarts of the Services it serves,
// with a second replica running. The clients dial a proxy standing for the deltaeds Service; when
// replica A dies it sends new connections to replica B, and the clients reconnect there declaring
// what they hold. Meanwhile pods keep being replaced (maxSurge 1, maxUnavailable 0, real
// EndpointSlice controller). No client ever routes again to an endpoint it had moved off (a
// replaced pod, whose IP is gone for good: a stale answer from the replica taking over would show
// as one), and every client ends on exactly the new pods. Replica A is then started again and a
// client attached to it agrees.
func TestKillMidRollout(t *testing.T) {
	const (
		ns       = "s12-kill"
		services = 3
		replicas = 4
		clients  = 4
	)
	e := scenario(t, ns)
	var (
		deps  []*harness.Deployment
		names []string
	)
	for i := range services {
		svc := fmt.Sprintf("svc-%d", i)
		deps = append(deps, e.service(t, ns, svc, replicas))
		names = append(names, translate.ClusterName(ns, svc, httpPort.Name))
	}
	a := e.deltaeds(t, harness.DeltaedsOptions{Name: "replica-a"})
	b := e.deltaeds(t, harness.DeltaedsOptions{Name: "replica-b"})
	proxy, err := harness.NewProxy(a.XDSAddress(), logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)

	left := newDepartures()
	f := e.fleet(t, envoyfleet.Options{Size: clients, Target: proxy.Addr(), NodePrefix: "s12-kill", OnApply: left.onApply})
	f.Subscribe(names...)
	current := func() func(envoysim.State) bool {
		var all []func(envoysim.State) bool
		for i, d := range deps {
			all = append(all, holds(names[i], d.IPs(), nil))
		}
		return holdsAll(all...)
	}
	waitAll(t, "every Service through replica A", f, current())

	// Roll every Service; kill replica A once a third of the pods are replaced.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		replaced int
		errs     = make([]error, services)
		third    = make(chan struct{})
		once     sync.Once
	)
	for i, d := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			errs[i] = d.RollingRestart(ctx, harness.RolloutOptions{
				MaxSurge: 1, DrainFor: 2 * time.Second, StepPause: 500 * time.Millisecond,
				Progress: func(n, _ int) {
					mu.Lock()
					replaced += n - last
					last = n
					if replaced >= services*replicas/3 {
						once.Do(func() { close(third) })
					}
					mu.Unlock()
				},
			})
		}()
	}
	select {
	case <-third:
	case <-ctx.Done():
	}
	streams := make([]uint64, clients)
	for i, c := range f.Clients {
		streams[i] = c.Stats().Streams
	}
	killed := time.Now()
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	proxy.SetBackend(b.XDSAddress())
	if err := harness.Eventually(waitCtx(t), func() error { return streamsAre(t, b, clients) }); err != nil {
		t.Fatalf("the clients did not reconnect to replica B: %v", err)
	}
	t.Logf("replica A SIGKILLed with %d of %d pods replaced; all %d clients on replica B %s later",
		services*replicas/3, services*replicas, clients, time.Since(killed).Round(10*time.Millisecond))
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rolling %s: %v", names[i], err)
		}
	}
	rolled := time.Now()
	waitAll(t, "every client on the new pods", f, current())
	t.Logf("rollouts done %s after the kill; every client on exactly the new pods %s after the last pod went",
		rolled.Sub(killed).Round(100*time.Millisecond), time.Since(rolled).Round(10*time.Millisecond))
	for i, c := range f.Clients {
		if s := c.Stats(); s.Streams == streams[i] {
			t.Errorf("client %d did not reconnect after the kill", i)
		}
	}
	for _, v := range left.returns() {
		t.Error(v)
	}
	t.Logf("%d endpoints left the clients' routes during the rollouts; none came back", left.count())

	// Replica A, started again, serves the same.
	if err := a.StartAgain(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	late := e.fleet(t, envoyfleet.Options{Size: 1, Target: a.XDSAddress(), NodePrefix: "s12-kill-a"})
	late.Subscribe(names...)
	waitAll(t, "the new pods on the restarted replica A", late, current())
}

// departures watches what clients route to: an endpoint that leaves a client's route for a name
// must never come back to it (in a rollout a replaced pod's IP is gone for good).
type departures struct {
	mu     sync.Mutex
	routed map[string]map[string]bool // client/name -> IPs routed to
	gone   map[string]map[string]bool // client/name -> IPs that left
	back   []string
	n      int
}

func newDepartures() *departures {
	return &departures{routed: map[string]map[string]bool{}, gone: map[string]map[string]bool{}}
}

// onApply is a FleetOptions.OnApply.
func (d *departures) onApply(i int, c *envoysim.Client, a envoysim.Applied) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range a.Updated {
		r, _ := c.Route(u.Name)
		key := fmt.Sprintf("client %d %s", i, u.Name)
		now := map[string]bool{}
		for _, ep := range harness.Endpoints(r.CLA) {
			now[ep.IP] = true
			if d.gone[key][ep.IP] {
				d.back = append(d.back, fmt.Sprintf("%s routes again to %s, which it had moved off (version %s)", key, ep.IP, short(u.Version)))
			}
		}
		if d.gone[key] == nil {
			d.gone[key] = map[string]bool{}
		}
		for ip := range d.routed[key] {
			if !now[ip] {
				d.gone[key][ip] = true
				d.n++
			}
		}
		d.routed[key] = now
	}
}

func (d *departures) returns() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.back...)
}

func (d *departures) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}
