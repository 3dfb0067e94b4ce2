package e2e

import (
	"testing"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// TestSubscriptionLifecycle covers what Envoy does around the nine scenarios: a cluster added
// before its Service exists (warming ends on an empty CLA, and the endpoints come once the
// Service does), and a Deployment scaled to zero (an empty CLA, never a removal, and the
// endpoints come back with the pods). A cluster removed and added back is
// TestResubscribeResends.
func TestSubscriptionLifecycle(t *testing.T) {
	const ns = "lifecycle"
	e := scenario(t, ns)
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-lifecycle"})
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 3, Target: p.XDSAddress(), NodePrefix: "lc", OnApply: rec.onApply})
	ctx := t.Context()

	// Subscribed before the Service exists: an empty CLA at once, which ends the cluster's
	// warming with nothing to route to.
	lateName := translate.ClusterName(ns, "late", "http")
	f.Subscribe(lateName)
	waitAll(t, "an empty CLA for a Service that does not exist yet", f, routesNothing(lateName))
	late := e.service(t, ns, "late", 2)
	waitAll(t, "the Service once it exists", f, holds(lateName, late.IPs(), nil))

	// Scaled to zero: every pod goes, the CLA empties but stays.
	mark := rec.mark()
	for _, pod := range late.Pods() {
		if err := late.Remove(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, "an empty CLA for a Service with no pods", f, holds(lateName, nil, nil))
	added, err := late.Scale(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, "the pods back", f, holds(lateName, ipsOf(added), nil))
	for i := range f.Clients {
		for _, ev := range rec.since(mark, i, lateName) {
			if ev.removed {
				t.Errorf("client %d: the CLA of a Service scaled to zero was removed", i)
			}
		}
	}
}
