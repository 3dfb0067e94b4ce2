package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 2: a rolling restart of a 100-pod workload the way a Deployment does it (maxSurge
// 25%, maxUnavailable 0: new pods become ready, old ones drain as terminating, then go). At no
// applied response does any client hold a CLA for the Service with zero usable endpoints
// (priority 0 or 1); at the end every client holds exactly the new pods.
func TestRollingRestartNeverEmpty(t *testing.T) {
	const (
		ns       = "s2-rolling"
		replicas = 100
		clients  = 20
	)
	e := scenario(t, ns)
	d := e.service(t, ns, "api", replicas)
	name := translate.ClusterName(ns, "api", "http")
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s2"})

	// The invariant is checked on every response every client applies, on the client's own
	// receive goroutine, against what it routes to right after applying it.
	var (
		armed    atomic.Bool
		checked  atomic.Int64
		mu       sync.Mutex
		broken   []string
		minReady = map[int]int{} // by client: fewest priority-0 endpoints held during the rollout
		tracker  = harness.NewTracker(clients, func(string) string { return name })
	)
	f := e.fleet(t, envoyfleet.Options{
		Size: clients, Target: p.XDSAddress(), NodePrefix: "s2",
		OnApply: func(i int, c *envoysim.Client, a envoysim.Applied) {
			for _, u := range a.Updated {
				if u.Name != name {
					continue
				}
				r, _ := c.Route(name)
				tracker.Applied(i, name, r.CLA, a.ReceivedAt)
				if !armed.Load() {
					continue
				}
				checked.Add(1)
				usable, ready := harness.Usable(r.CLA), len(harness.IPsAt(r.CLA, 0))
				mu.Lock()
				if v, ok := minReady[i]; !ok || ready < v {
					minReady[i] = ready
				}
				if usable == 0 {
					broken = append(broken, fmt.Sprintf("client %d at %s: version %s has no usable endpoint: %s",
						i, a.ReceivedAt.Format(time.RFC3339Nano), u.Version, harness.Summary(r.CLA)))
				}
				mu.Unlock()
			}
			for _, r := range a.Removed {
				if r == name && armed.Load() {
					mu.Lock()
					broken = append(broken, fmt.Sprintf("client %d at %s: the live Service's CLA was removed", i, a.ReceivedAt.Format(time.RFC3339Nano)))
					mu.Unlock()
				}
			}
		},
	})
	f.Subscribe(name)
	waitAll(t, "all 100 old pods", f, holds(name, d.IPs(), nil))
	armed.Store(true)

	start := time.Now()
	err := d.RollingRestart(waitCtx(t), harness.RolloutOptions{
		MaxSurge: replicas / 4, MaxUnavailable: 0,
		DrainFor: 2 * time.Second,
		Observe:  tracker.Observe,
		Made:     tracker.Made,
	})
	if err != nil {
		t.Fatal(err)
	}
	rolled := time.Since(start)

	final := d.Pods()
	if len(final) != replicas {
		t.Fatalf("%d pods after the rollout, want %d", len(final), replicas)
	}
	for _, pod := range final {
		if pod.Revision != 2 {
			t.Fatalf("pod %s of revision %d survived the rollout", pod.Name, pod.Revision)
		}
	}
	waitAll(t, "exactly the 100 new pods", f, holds(name, ipsOf(final), nil))
	armed.Store(false)

	mu.Lock()
	defer mu.Unlock()
	for _, b := range broken {
		t.Error(b)
	}
	// The check must have run on real updates: the rollout moves 100 pods through three
	// states, so every client applies many versions.
	if n := checked.Load(); n < clients*4 {
		t.Errorf("only %d responses checked across %d clients: the rollout was not observed", n, clients)
	}
	lowest := replicas
	for _, v := range minReady {
		lowest = min(lowest, v)
	}
	lat := tracker.Stats()
	t.Logf("rollout of %d pods took %s; %d responses checked; fewest ready endpoints held by any client: %d; "+
		"propagation (pod change -> client) p50 %s p99 %s max %s over %d samples",
		replicas, rolled.Round(time.Millisecond), checked.Load(), lowest,
		lat.P50.Round(time.Millisecond), lat.P99.Round(time.Millisecond), lat.Max.Round(time.Millisecond), lat.Count)
}
