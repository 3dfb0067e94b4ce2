package e2e

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 3: a deleted Service. Every subscribed client at once holds an empty CLA for it (no
// endpoints: Envoy would otherwise keep the last hosts), and after the grace period gets it in
// removed_resources; a Service re-created within the grace period comes back without a removal
// in between.
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

	p := e.deltaeds(t, harness.Options{Name: "deltaeds-s3", DeletedGracePeriod: grace})
	rec := &recorder{}
	f := e.fleet(t, harness.FleetOptions{Size: 5, Target: p.XDSAddress(), NodePrefix: "s3", OnApply: rec.onApply})
	f.Subscribe(goneName, backName, keptName, droppedName)
	waitAll(t, "every Service", f, holdsAll(holds(goneName, gone.IPs(), nil), holds(backName, back.IPs(), nil),
		holds(keptName, ports.IPs(), nil), holds(droppedName, ports.IPs(), nil)))
	ctx := t.Context()

	// The two halves touch different Services and run side by side.
	t.Run("deleted: empty at once, removed after the grace period", func(t *testing.T) {
		t.Parallel()
		mark := rec.mark()
		if err := e.cluster.DeleteService(ctx, ns, "gone"); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "an empty CLA", f, func(s envoysim.State) bool {
			h, ok := s.Get(goneName)
			return ok && len(harness.Endpoints(h.CLA)) == 0
		})
		emptyAt := time.Now()
		waitAll(t, "the removal", f, func(s envoysim.State) bool { return s.Removed(goneName) })
		t.Logf("removal reached every client %s after the last got the empty CLA (grace period %s)",
			time.Since(emptyAt).Round(100*time.Millisecond), grace)

		for i := range f.Clients {
			evs := rec.since(mark, i, goneName)
			// The news after the deletion: updates (the last of them empty), then exactly
			// one removal, last.
			if len(evs) < 2 || !evs[len(evs)-1].removed {
				t.Errorf("client %d: after the deletion got %+v, want an empty CLA then a removal", i, evs)
				continue
			}
			removal, empty := evs[len(evs)-1], evs[len(evs)-2]
			if empty.removed || empty.endpoints != 0 {
				t.Errorf("client %d: the removal came after %+v, not after an empty CLA", i, empty)
			}
			for _, ev := range evs[:len(evs)-1] {
				if ev.removed {
					t.Errorf("client %d: removed twice: %+v", i, evs)
				}
			}
			// The grace period is deltaeds' own clock, started when it saw the slices go;
			// the client got the empty CLA after that. Half the period is a bound that only
			// an early removal can break.
			if held := removal.at.Sub(empty.at); held < grace/2 {
				t.Errorf("client %d: the empty CLA was removed after %s, before the grace period of %s", i, held, grace)
			}
		}
	})

	t.Run("re-created within the grace period: no removal", func(t *testing.T) {
		t.Parallel()
		mark := rec.mark()
		deleted := time.Now()
		if err := e.cluster.DeleteService(ctx, ns, "back"); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "an empty CLA", f, func(s envoysim.State) bool {
			h, ok := s.Get(backName)
			return ok && len(harness.Endpoints(h.CLA)) == 0
		})
		if _, err := e.cluster.CreateService(ctx, ns, "back", back.Labels(), []harness.ServicePort{httpPort}); err != nil {
			t.Fatal(err)
		}
		recreated := time.Since(deleted)
		waitAll(t, "the endpoints back", f, holds(backName, back.IPs(), nil))
		if recreated >= grace {
			t.Fatalf("re-creating the Service took %s, longer than the grace period %s: the machine is too slow for this check", recreated, grace)
		}
		// Outlive the grace period, then look back: a removal would have come by now.
		time.Sleep(time.Until(deleted.Add(grace + 5*time.Second)))
		for i, c := range f.Clients {
			for _, ev := range rec.since(mark, i, backName) {
				if ev.removed {
					t.Errorf("client %d: the re-created Service's CLA was removed at %s", i, ev.at.Format(time.RFC3339Nano))
				}
			}
			if h, ok := c.Get(backName); !ok || len(harness.Endpoints(h.CLA)) != 3 {
				t.Errorf("client %d: holds %s after the grace period", i, harness.Summary(h.CLA))
			}
		}
	})

	// A port removed from a live Service goes the same way as a deleted Service, and its
	// other port is untouched.
	t.Run("removed port: empty at once, removed after the grace period", func(t *testing.T) {
		t.Parallel()
		mark := rec.mark()
		svcs := e.cp.Client().CoreV1().Services(ns)
		svc, err := svcs.Get(ctx, "ports", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Ports = svc.Spec.Ports[:1] // http only
		if svc.Spec.Ports[0].Name != "http" {
			t.Fatalf("first port is %q", svc.Spec.Ports[0].Name)
		}
		if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitAll(t, "an empty CLA for the removed port", f, func(s envoysim.State) bool {
			h, ok := s.Get(droppedName)
			return ok && len(harness.Endpoints(h.CLA)) == 0
		})
		waitAll(t, "the removal of the removed port", f, func(s envoysim.State) bool { return s.Removed(droppedName) })
		for i, c := range f.Clients {
			for _, ev := range rec.since(mark, i, keptName) {
				if ev.removed || ev.endpoints != 3 {
					t.Errorf("client %d: the kept port changed: %+v", i, ev)
				}
			}
			if h, ok := c.Get(keptName); !ok || len(harness.Endpoints(h.CLA)) != 3 {
				t.Errorf("client %d: the kept port is %s", i, harness.Summary(h.CLA))
			}
		}
	})
}
