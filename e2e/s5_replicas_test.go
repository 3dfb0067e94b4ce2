package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 5: deltaeds restarted, and two replicas side by side. A client reconnecting with
// initial_resource_versions, to the restarted process or to the other replica, receives zero
// resources when nothing changed, and exactly the changed ones otherwise.
//
// The clients dial a TCP proxy that stands for the deltaeds Service: moving it between replicas
// cuts their connections and they reconnect, presenting what they hold. "Receives nothing" needs
// a moment at which to stop looking: after each reconnect the clients subscribe to a canary
// Service that has not been asked for before, and once they hold it, every resend the server
// would make on reconnect has arrived (the server answers the reconnect's first request before
// the canary's subscription). So the news after a reconnect must be exactly the canary, plus the
// changed CLAs.
func TestRestartAndReplicas(t *testing.T) {
	const (
		ns       = "s5-replicas"
		services = 6
		clients  = 4
	)
	e := scenario(t, ns)
	var (
		deps  []*harness.Deployment
		names []string
	)
	for i := range services {
		svc := fmt.Sprintf("svc-%d", i)
		deps = append(deps, e.service(t, ns, svc, 3))
		names = append(names, translate.ClusterName(ns, svc, "http"))
	}
	var canaries []string
	for i := range 4 {
		svc := fmt.Sprintf("canary-%d", i)
		e.service(t, ns, svc, 1)
		canaries = append(canaries, translate.ClusterName(ns, svc, "http"))
	}

	a := e.deltaeds(t, harness.DeltaedsOptions{Name: "replica-a"})
	b := e.deltaeds(t, harness.DeltaedsOptions{Name: "replica-b"})
	proxy, err := harness.NewProxy(a.XDSAddress(), logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)

	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: clients, Target: proxy.Addr(), NodePrefix: "s5", OnApply: rec.onApply})
	f.Subscribe(names...)
	var all []func(envoysim.State) bool
	for i, d := range deps {
		all = append(all, holds(names[i], d.IPs(), nil))
	}
	waitAll(t, "every Service through replica A", f, holdsAll(all...))

	// Watchers attached to each replica directly, to know when a change has reached it.
	watchA := e.fleet(t, envoyfleet.Options{Size: 1, Target: a.XDSAddress(), NodePrefix: "s5-watch-a"})
	watchB := e.fleet(t, envoyfleet.Options{Size: 1, Target: b.XDSAddress(), NodePrefix: "s5-watch-b"})
	watchA.Subscribe(names...)
	watchB.Subscribe(names...)
	waitAll(t, "every Service on replica A", watchA, holdsAll(all...))
	waitAll(t, "every Service on replica B", watchB, holdsAll(all...))

	// Versions are hashes of content: both replicas publish the same versions. (Versions are
	// what the servers said, so the xDS state is compared here and below; the waits for
	// endpoints read the routes, through holds.)
	for _, n := range names {
		ha, _ := watchA.Clients[0].Held(n)
		hb, _ := watchB.Clients[0].Held(n)
		if ha.Version != hb.Version {
			t.Errorf("%s: replica A has version %s, replica B %s", n, ha.Version, hb.Version)
		}
	}

	ctx := t.Context()
	step := 0
	// reconnect runs move (which must make the clients reconnect), subscribes to the next
	// canary and checks that the clients then received exactly the canary and changed.
	reconnect := func(what string, changed []string, move func()) {
		t.Helper()
		canary := canaries[step]
		step++
		before := make([]uint64, clients)
		for i, c := range f.Clients {
			before[i] = c.Stats().Streams
		}
		mark := rec.mark()
		move()
		f.Subscribe(canary)
		// A client applies responses in order, and envoysim runs OnApply before a WaitFor sees
		// a response: once every client holds its canary, the recorder has everything each
		// received before it.
		waitAll(t, what+": the canary", f, func(s envoysim.State) bool { _, ok := s.Held(canary); return ok })
		want := slices.Sorted(slices.Values(append([]string{canary}, changed...)))
		for i, c := range f.Clients {
			if s := c.Stats(); s.Streams == before[i] {
				t.Errorf("%s: client %d did not reconnect", what, i)
			}
			var got []string
			for _, ev := range rec.since(mark, i, "") {
				if ev.removed {
					t.Errorf("%s: client %d: %s removed on reconnect", what, i, ev.name)
					continue
				}
				got = append(got, ev.name)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: client %d received %v after reconnecting, want exactly %v", what, i, got, want)
			}
		}
		t.Logf("%s: every client reconnected and received exactly %v", what, want)
	}
	// change marks one pod of Service i unready and waits until both replicas have it.
	change := func(i int) string {
		t.Helper()
		pod := deps[i].Pods()[0]
		if err := deps[i].SetReady(ctx, pod, false); err != nil {
			t.Fatal(err)
		}
		var rest []string
		for _, ip := range deps[i].IPs() {
			if ip != pod.IP {
				rest = append(rest, ip)
			}
		}
		start := time.Now()
		waitAll(t, "the change on replica B", watchB, holds(names[i], rest, nil))
		t.Logf("%s: a pod turned unready reached replica B in %s", names[i], time.Since(start).Round(100*time.Millisecond))
		return names[i]
	}

	reconnect("restart of replica A, nothing changed", nil, func() {
		if err := a.Restart(waitCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
	reconnect("move to replica B, nothing changed", nil, func() {
		proxy.SetBackend(b.XDSAddress())
	})
	reconnect("back to the restarted replica A, one Service changed meanwhile", []string{names[1]}, func() {
		proxy.SetBackend("") // the clients lose their stream and keep retrying
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		changed := change(1)
		if err := a.StartAgain(waitCtx(t)); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "the change on the restarted replica A", watchA, func(s envoysim.State) bool {
			h, ok := s.Held(changed)
			hb, _ := watchB.Clients[0].Held(changed)
			return ok && h.Version == hb.Version
		})
		proxy.SetBackend(a.XDSAddress())
	})
	reconnect("move to replica B, two Services changed meanwhile", []string{names[2], names[4]}, func() {
		proxy.SetBackend("")
		change(2)
		change(4)
		waitAll(t, "the changes on replica A", watchA, func(s envoysim.State) bool {
			for _, n := range []string{names[2], names[4]} {
				h, _ := s.Held(n)
				hb, _ := watchB.Clients[0].Held(n)
				if h.Version != hb.Version {
					return false
				}
			}
			return true
		})
		proxy.SetBackend(b.XDSAddress())
	})
}
