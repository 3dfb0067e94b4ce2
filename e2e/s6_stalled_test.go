package e2e

import (
	"context"
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

// Scenario 6: a client that stops reading does not delay the others; deltaeds' memory stays
// bounded; the stalled client is caught up (or disconnected, and then caught up on reconnect)
// once it reads again.
//
// The CLAs are large enough (50 endpoints each, 10 Services) that one response to the stalled
// client exceeds HTTP/2's initial flow-control window, so deltaeds' send to it blocks, while
// rounds of readiness churn go to everyone else.
func TestStalledClient(t *testing.T) {
	const (
		ns       = "s6-stalled"
		services = 10
		replicas = 50
		rounds   = 8
	)
	e := scenario(t, ns)
	deps := make([]*harness.Deployment, services)
	names := make([]string, services)
	for i := range services {
		svc := fmt.Sprintf("big-%d", i)
		deps[i] = e.service(t, ns, svc, replicas)
		names[i] = translate.ClusterName(ns, svc, "http")
	}
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s6"})
	f := e.fleet(t, envoyfleet.Options{Size: 5, Target: p.XDSAddress(), NodePrefix: "s6"})
	stalled := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s6-stalled"})
	f.Subscribe(names...)
	stalled.Subscribe(names...)

	// want[i] is the set of IPs Service i should show; unready[i] its unready pods.
	want := func(unready []map[string]bool) func(envoysim.State) bool {
		var preds []func(envoysim.State) bool
		for i, d := range deps {
			var ips []string
			for _, pod := range d.Pods() {
				if !unready[i][pod.Name] {
					ips = append(ips, pod.IP)
				}
			}
			preds = append(preds, holds(names[i], ips, nil))
		}
		return holdsAll(preds...)
	}
	unready := make([]map[string]bool, services)
	for i := range unready {
		unready[i] = map[string]bool{}
	}
	waitAll(t, "every Service", f, want(unready))
	waitAll(t, "every Service (stalled client, before it stalls)", stalled, want(unready))

	rss0, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}
	c := stalled.Clients[0]
	c.Stall(true)
	responsesAtStall := c.Stats().Responses

	// Rounds of churn: each flips a different fifth of every Service's pods unready, and the
	// active clients must converge on each round while the stalled one reads nothing.
	var (
		peak    = rss0
		changes atomic.Int64
		samples sync.WaitGroup
		stop    = make(chan struct{})
		mu      sync.Mutex
	)
	samples.Add(1)
	go func() {
		defer samples.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if r, err := p.RSS(); err == nil {
					mu.Lock()
					peak = max(peak, r)
					mu.Unlock()
				}
			}
		}
	}()
	start := time.Now()
	for round := range rounds {
		for i, d := range deps {
			pods := d.Pods()
			next := map[string]bool{}
			for j, pod := range pods {
				if j%5 == round%5 {
					next[pod.Name] = true
				}
			}
			if err := harness.Parallel(t.Context(), 8, len(pods), func(ctx context.Context, j int) error {
				pod := pods[j]
				if next[pod.Name] == unready[i][pod.Name] {
					return nil
				}
				changes.Add(1)
				return d.SetReady(ctx, pod, !next[pod.Name])
			}); err != nil {
				t.Fatal(err)
			}
			unready[i] = next
		}
		waitAll(t, fmt.Sprintf("round %d at the active clients", round), f, want(unready))
	}
	churn := time.Since(start)
	close(stop)
	samples.Wait()

	// The stall was real: the stalled client read at most the one response that was in
	// flight, and deltaeds has been holding the rest.
	if got := c.Stats().Responses - responsesAtStall; got > 1 {
		t.Errorf("the stalled client read %d responses while stalled", got)
	}
	mu.Lock()
	grown := peak - rss0
	mu.Unlock()
	// Bounded: the pending set of the stalled stream holds names, not a backlog of versions.
	// 10 CLAs of 50 endpoints are ~100 KB; 64 MB of growth would mean a backlog.
	if grown > 64<<20 {
		t.Errorf("deltaeds' RSS grew by %d MB (from %d MB) while a client was stalled", grown>>20, rss0>>20)
	}
	t.Logf("%d rounds of churn (%d pod changes) reached the active clients in %s while one client was stalled; deltaeds RSS %d MB -> peak %d MB",
		rounds, changes.Load(), churn.Round(100*time.Millisecond), rss0>>20, peak>>20)

	// Reading again, it is caught up with the latest state (directly, or after a reconnect if
	// deltaeds dropped it).
	c.Stall(false)
	waitAll(t, "the stalled client to catch up", stalled, want(unready))
	s := c.Stats()
	t.Logf("the stalled client caught up: %d responses since the stall, %d reconnects", s.Responses-responsesAtStall, s.Reconnects)
	for _, ac := range f.Clients {
		if ac.Stats().Reconnects != 0 {
			t.Errorf("an active client reconnected: %+v", ac.Stats())
		}
	}
}
