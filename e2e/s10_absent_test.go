package e2e

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 10: no Envoy is ever left routing to a deleted Service's endpoints, and a NACK never
// strands the rest of its response (issue 9).
//
// Envoy ignores EDS removals and keeps its last hosts, and it does not declare, on reconnect, a
// name that once got a removal. So deltaeds answers every name subscribed by name that has no
// resource with an empty CLA, whatever the client holds and whichever replica it talks to. The
// clients here are envoysim, and every check reads what they route to (envoysim's model of
// EdsClusterImpl), not what the server said. The grace period is short so that the deleted
// resources leave the store (where a removal was once the only answer) within the scenario.
//
// Cases, in order: a name that does not exist yet (a typo fixed later); a partially rejected
// initial batch; a deletion that lands while a response is unacknowledged; a client away while
// its Service is deleted, reconnecting to another replica that dropped it; a Service deleted and
// re-created with other pods while the client is away; a client reconnecting to a restarted
// replica that never saw the Service.
func TestAbsentNamesRouteNothing(t *testing.T) {
	const (
		ns    = "s10-absent"
		grace = 2 * time.Second
	)
	e := scenario(t, ns)
	name := func(svc string) string { return translate.ClusterName(ns, svc, "http") }
	again := e.service(t, ns, "again", 2)
	left := e.service(t, ns, "left", 3)
	norun := e.service(t, ns, "norun", 3)
	stall := e.service(t, ns, "stall", 2)

	a := e.deltaeds(t, harness.DeltaedsOptions{Name: "s10-a", DeletedGracePeriod: grace})
	b := e.deltaeds(t, harness.DeltaedsOptions{Name: "s10-b", DeletedGracePeriod: grace})
	proxy, err := harness.NewProxy(a.XDSAddress(), logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	// Wildcard watchers see a resource leave a replica's store (their removal), which is when a
	// removal used to be all a reconnecting client got.
	watchA := e.fleet(t, envoyfleet.Options{Size: 1, Target: a.XDSAddress(), NodePrefix: "s10-watch-a", Wildcard: true})
	watchB := e.fleet(t, envoyfleet.Options{Size: 1, Target: b.XDSAddress(), NodePrefix: "s10-watch-b", Wildcard: true})
	gone := func(replica string, w *envoyfleet.Fleet, svc string) {
		t.Helper()
		waitAll(t, svc+" gone from replica "+replica, w, func(s envoysim.State) bool { return s.Removed(name(svc)) })
	}

	f := e.fleet(t, envoyfleet.Options{Size: 3, Target: proxy.Addr(), NodePrefix: "s10"})
	f.Subscribe(name("again"), name("left"), name("norun"))
	waitAll(t, "the first endpoints", f, holdsAll(holds(name("again"), again.IPs(), nil),
		holds(name("left"), left.IPs(), nil), holds(name("norun"), norun.IPs(), nil)))
	ctx := t.Context()

	t.Run("a name that does not exist yet routes nothing, then its endpoints", func(t *testing.T) {
		f.Subscribe(name("later"))
		waitAll(t, "an empty CLA for a Service that does not exist", f, routesNothing(name("later")))
		later := e.service(t, ns, "later", 2)
		waitAll(t, "the Service once created", f, holds(name("later"), later.IPs(), nil))
	})

	t.Run("a partially rejected initial batch: the good resources arrive", func(t *testing.T) {
		// The client fails on the first resource it applies (names are sorted, "again" comes
		// first), so Envoy applied nothing of the batch: deltaeds must resend the others.
		bad := errors.New("rejected by the test")
		nack := e.fleet(t, envoyfleet.Options{Size: 1, Target: a.XDSAddress(), NodePrefix: "s10-nack",
			Reject: func(_ int, n string, _ proto.Message) error {
				if n == name("again") {
					return bad
				}
				return nil
			}})
		nack.Subscribe(name("again"), name("left"), name("norun"), name("stall"))
		waitAll(t, "every resource but the rejected one", nack, holdsAll(holds(name("left"), left.IPs(), nil),
			holds(name("norun"), norun.IPs(), nil), holds(name("stall"), stall.IPs(), nil)))
		c := nack.Clients[0]
		for _, n := range []string{name("left"), name("norun"), name("stall")} {
			if h, ok := c.Held(n); !ok {
				t.Errorf("%s routed but never ACKed", n)
			} else if r, _ := c.Route(n); r.Version != h.Version {
				t.Errorf("%s: routes with %s, ACKed %s", n, r.Version, h.Version)
			}
		}
		if _, ok := c.Route(name("again")); ok {
			t.Errorf("the rejected resource is routed with")
		}
		m := metrics(t, a)
		if n := m.Value("deltaeds_xds_nack_resends_total"); n < 3 {
			t.Errorf("deltaeds_xds_nack_resends_total = %v, want at least the 3 good resources", n)
		}
	})

	t.Run("a deletion while a response is unacknowledged", func(t *testing.T) {
		slow := e.fleet(t, envoyfleet.Options{Size: 1, Target: a.XDSAddress(), NodePrefix: "s10-slow"})
		slow.Subscribe(name("stall"))
		waitAll(t, "the endpoints", slow, holds(name("stall"), stall.IPs(), nil))
		c := slow.Clients[0]
		c.Stall(true)
		// Two changes: a Recv already waiting when the client stalled may still take the first,
		// so the second (or the first) goes out and stays unacknowledged...
		for range 2 {
			if _, err := stall.Scale(ctx, 1); err != nil {
				t.Fatal(err)
			}
			waitAll(t, "the change on replica A", watchA, holds(name("stall"), stall.IPs(), nil))
		}
		// ...while the Service is deleted and, after the grace period, leaves the store.
		if err := e.cluster.DeleteService(ctx, ns, "stall"); err != nil {
			t.Fatal(err)
		}
		gone("A", watchA, "stall")
		c.Stall(false)
		waitAll(t, "routing nothing once the client reads again", slow, routesNothing(name("stall")))
	})

	t.Run("away while deleted, back on another replica", func(t *testing.T) {
		proxy.SetBackend("") // the clients are cut off and keep retrying
		if err := e.cluster.DeleteService(ctx, ns, "left"); err != nil {
			t.Fatal(err)
		}
		// Deleted and re-created with other pods while the client is away.
		if err := e.cluster.DeleteService(ctx, ns, "again"); err != nil {
			t.Fatal(err)
		}
		gone("B", watchB, "left")
		gone("B", watchB, "again")
		fresh, err := e.cluster.Deploy(ctx, harness.DeploymentSpec{Namespace: ns, Name: "again-v2", Replicas: 2, Ports: containerPorts})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cluster.CreateService(ctx, ns, "again", fresh.Labels(), []harness.ServicePort{httpPort}); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "the re-created Service on replica B", watchB, holds(name("again"), fresh.IPs(), nil))
		proxy.SetBackend(b.XDSAddress())
		waitAll(t, "replica B's answers", f, holdsAll(routesNothing(name("left")), holds(name("again"), fresh.IPs(), nil)))
	})

	t.Run("away while deleted, back on a restarted replica that never saw it", func(t *testing.T) {
		proxy.SetBackend("")
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := e.cluster.DeleteService(ctx, ns, "norun"); err != nil {
			t.Fatal(err)
		}
		gone("B", watchB, "norun") // its EndpointSlices are gone too: A will never see them
		if err := a.StartAgain(ctx); err != nil {
			t.Fatal(err)
		}
		proxy.SetBackend(a.XDSAddress())
		waitAll(t, "the restarted replica's answer", f, routesNothing(name("norun")))
	})
}
