package e2e

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 3: a deleted Service. Every subscribed client at once routes to nothing for it: an
// empty CLA, never only a removal (Envoy ignores EDS removals and would keep the last hosts,
// whose IPs go to other pods). deltaeds keeps that empty CLA for a grace period and then drops
// the resource: a wildcard subscriber gets it in removed_resources then, while a client that
// subscribed by name is never sent a removal and keeps routing to nothing. A Service re-created
// within the grace period comes back without a removal in between. A port removed from a live
// Service goes the same way, its other port untouched.
//
// The three cases touch different Services and run in lockstep, so the scenario lasts one grace
// period. The port is dropped once every client has the Services' empty CLAs, so its removal,
// which comes a grace period later, also marks the time by which a wrong removal of the
// re-created Service would have come: no sleep, and no assertion on how long anything took.
func TestServiceDeleted(t *testing.T) {
	const (
		ns    = "s3-deleted"
		grace = 10 * time.Second
	)
	e := scenario(t, ns)
	gone := e.service(t, ns, "gone", 3)
	back := e.service(t, ns, "back", 3)
	ports := e.service(t, ns, "ports", 3, httpPort, metricsPort)
	goneName := translate.ClusterName(ns, "gone", "http")
	backName := translate.ClusterName(ns, "back", "http")
	keptName := translate.ClusterName(ns, "ports", "http")
	droppedName := translate.ClusterName(ns, "ports", "metrics")

	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s3", DeletedGracePeriod: grace})
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 5, Target: p.XDSAddress(), NodePrefix: "s3", OnApply: rec.onApply})
	f.Subscribe(goneName, backName, keptName, droppedName)
	// The wildcard subscriber is the only one deltaeds sends removals to: it shows when the
	// grace period ends.
	wrec := &recorder{}
	wild := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s3-wildcard", Wildcard: true, OnApply: wrec.onApply})
	every := holdsAll(holds(goneName, gone.IPs(), nil), holds(backName, back.IPs(), nil),
		holds(keptName, ports.IPs(), nil), holds(droppedName, ports.IPs(), nil))
	waitAll(t, "every Service", f, every)
	waitAll(t, "every Service (wildcard subscriber)", wild, every)
	ctx := t.Context()

	// Delete two Services; at once, empty CLAs, not removals: every client routes to nothing
	// for them.
	mark, wmark := rec.mark(), wrec.mark()
	deleted := time.Now()
	for _, svc := range []string{"gone", "back"} {
		if err := e.cluster.DeleteService(ctx, ns, svc); err != nil {
			t.Fatal(err)
		}
	}
	deletedNothing := holdsAll(routesNothing(goneName), routesNothing(backName))
	waitAll(t, "empty CLAs", f, deletedNothing)
	waitAll(t, "empty CLAs (wildcard subscriber)", wild, deletedNothing)

	// Then drop one port of a third.
	svcs := e.cp.Client().CoreV1().Services(ns)
	svc, err := svcs.Get(ctx, "ports", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Ports[0].Name != "http" {
		t.Fatalf("first port is %q", svc.Spec.Ports[0].Name)
	}
	svc.Spec.Ports = svc.Spec.Ports[:1]
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	waitAll(t, "an empty CLA for the dropped port", f, routesNothing(droppedName))
	waitAll(t, "an empty CLA for the dropped port (wildcard subscriber)", wild, routesNothing(droppedName))

	// Re-created within the grace period, "back" gets its endpoints again.
	if _, err := e.cluster.CreateService(ctx, ns, "back", back.Labels(), []harness.ServicePort{httpPort}); err != nil {
		t.Fatal(err)
	}
	recreated := time.Since(deleted)
	waitAll(t, "the re-created Service's endpoints", f, holds(backName, back.IPs(), nil))
	waitAll(t, "the re-created Service's endpoints (wildcard subscriber)", wild, holds(backName, back.IPs(), nil))
	backAgain := wrec.mark() // the wildcard subscriber's events from here on follow the re-creation
	// The checks of the re-created Service need it back within the grace period; a machine
	// slow enough to miss that is reported, not failed: deltaeds then rightly removes it.
	inTime := recreated < grace
	t.Logf("the Service was re-created %s after the deletion (grace period %s)", recreated.Round(100*time.Millisecond), grace)
	if !inTime {
		t.Logf("re-created after the grace period: the checks that it was never removed do not apply")
	}

	// After the grace period: removals for the deleted Service and the dropped port, to the
	// wildcard subscriber.
	waitAll(t, "the removals at the wildcard subscriber", wild, func(s envoysim.State) bool { return s.Removed(goneName) && s.Removed(droppedName) })
	t.Logf("removals reached the wildcard subscriber %s after the deletion (grace period %s)", time.Since(deleted).Round(100*time.Millisecond), grace)
	// The dropped port's grace period started after the re-created Service's: a removal of it
	// would have come by now.

	// The wildcard subscriber: for the deleted Service and the dropped port, updates (the last
	// of them empty), then exactly one removal, last, a grace period after the empty CLA.
	for _, name := range []string{goneName, droppedName} {
		evs := wrec.since(wmark, 0, name)
		if len(evs) < 2 || !evs[len(evs)-1].removed {
			t.Errorf("wildcard subscriber %s: got %+v, want an empty CLA then a removal", name, evs)
			continue
		}
		removal, emptied := evs[len(evs)-1], evs[len(evs)-2]
		if emptied.removed || emptied.endpoints != 0 {
			t.Errorf("wildcard subscriber %s: the removal came after %+v, not after an empty CLA", name, emptied)
		}
		for _, ev := range evs[:len(evs)-1] {
			if ev.removed {
				t.Errorf("wildcard subscriber %s: removed twice: %+v", name, evs)
			}
		}
		// The empty CLA stays for the grace period: the removal comes after the Service was
		// re-created, which was within it.
		if inTime && !slices.Contains(wrec.since(backAgain, 0, name), removal) {
			t.Errorf("wildcard subscriber %s: removed before the Service re-created within the grace period was back: %+v", name, evs)
		}
		t.Logf("wildcard subscriber %s: the empty CLA was removed %s after it came (grace period %s)", name, removal.at.Sub(emptied.at).Round(100*time.Millisecond), grace)
	}
	for _, ev := range wrec.since(wmark, 0, backName) {
		if ev.removed && inTime {
			t.Errorf("wildcard subscriber: the re-created Service's CLA was removed at %s", ev.at.Format(time.RFC3339Nano))
		}
	}

	// The clients that subscribed by name: never a removal, and what they route to for the
	// deleted Service and the dropped port is still nothing, grace period or not.
	for i, c := range f.Clients {
		for _, name := range []string{goneName, droppedName} {
			evs := rec.since(mark, i, name)
			if len(evs) == 0 || evs[len(evs)-1].endpoints != 0 {
				t.Errorf("client %d %s: got %+v, want updates ending with an empty CLA", i, name, evs)
			}
			for _, ev := range evs {
				if ev.removed {
					t.Errorf("client %d %s: a removal, sent to a client that subscribed by name: %+v", i, name, evs)
					break
				}
			}
			if r, ok := c.Route(name); !ok || len(harness.Endpoints(r.CLA)) != 0 {
				t.Errorf("client %d: routes %s to %s after the grace period, want an empty CLA", i, name, harness.Summary(r.CLA))
			}
		}
		for _, ev := range rec.since(mark, i, backName) {
			if ev.removed {
				t.Errorf("client %d: the re-created Service's CLA was removed at %s", i, ev.at.Format(time.RFC3339Nano))
			}
		}
		if r, ok := c.Route(backName); !ok || len(harness.Endpoints(r.CLA)) != 3 {
			t.Errorf("client %d: routes the re-created Service to %s after the grace period", i, harness.Summary(r.CLA))
		}
		for _, ev := range rec.since(mark, i, keptName) {
			if ev.removed || ev.endpoints != 3 {
				t.Errorf("client %d: the kept port changed: %+v", i, ev)
			}
		}
		if r, ok := c.Route(keptName); !ok || len(harness.Endpoints(r.CLA)) != 3 {
			t.Errorf("client %d: the kept port routes to %s", i, harness.Summary(r.CLA))
		}
	}
}
