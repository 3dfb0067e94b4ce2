package e2e

import (
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// awaitMarker subscribes c to a name no Service has (deltaeds answers it at once with an empty
// CLA) and waits until c holds it: every response deltaeds meant to send c before reading that
// subscription has then arrived, so a count taken now sees any resend a NACK provoked.
func awaitMarker(t *testing.T, f *envoyfleet.Fleet, c *envoysim.Client, name string) {
	t.Helper()
	c.Subscribe(name)
	waitAll(t, "the marker "+name, f, func(s envoysim.State) bool { _, ok := s.Held(name); return ok })
}

// Scenario 7: a client that NACKs. Its NACKs are counted in /metrics, deltaeds does not resend
// the rejected version in a loop (the next change is sent), and other clients are unaffected.
func TestNACKingClient(t *testing.T) {
	const ns = "s7-nack"
	e := scenario(t, ns)
	pay := e.service(t, ns, "pay", 3)
	shop := e.service(t, ns, "shop", 3)
	payName := translate.ClusterName(ns, "pay", "http")
	shopName := translate.ClusterName(ns, "shop", "http")
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s7"})

	good := e.fleet(t, envoyfleet.Options{Size: 4, Target: p.XDSAddress(), NodePrefix: "s7"})
	// The NACKing client rejects every response that carries pay, as an Envoy would whose
	// filter chain cannot use it; shop is subscribed first so it arrives on its own.
	bad := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s7-nacker",
		NACK: func(_ int, r *discoveryv3.DeltaDiscoveryResponse) error {
			for _, res := range r.GetResources() {
				if res.GetName() == payName {
					return fmt.Errorf("e2e: cluster %s rejected by test", payName)
				}
			}
			return nil
		}})
	good.Subscribe(payName, shopName)
	bad.Subscribe(shopName)
	waitAll(t, "shop at the NACKing client", bad, holds(shopName, shop.IPs(), nil))
	bad.Subscribe(payName)
	nacker := bad.Clients[0]
	waitAll(t, "the first NACK", bad, func(s envoysim.State) bool { return s.Stats().NACKs >= 1 })
	waitAll(t, "both Services at the other clients", good, holdsAll(holds(payName, pay.IPs(), nil), holds(shopName, shop.IPs(), nil)))

	// Counted, once.
	if err := harness.Eventually(waitCtx(t), func() error {
		if got := metrics(t, p).Value("deltaeds_xds_nacks_total"); got != 1 {
			return fmt.Errorf("deltaeds_xds_nacks_total = %v, want 1", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// No resend loop: nothing changed, so nothing comes but the marker's answer. A loop would
	// resend pay as soon as the NACK freed the stream, before the marker's subscription is read
	// (or with it, and be NACKed again).
	s0 := nacker.Stats()
	awaitMarker(t, bad, nacker, translate.ClusterName(ns, "marker-1", "http"))
	if s := nacker.Stats(); s.Responses != s0.Responses+1 || s.NACKs != 1 {
		t.Fatalf("without any change the NACKing client got %d responses besides the marker's (%d NACKs in all): a resend loop",
			s.Responses-s0.Responses-1, s.NACKs)
	}
	// A NACK of the whole response: the client neither routes with pay nor records its version.
	if _, ok := nacker.Route(payName); ok {
		t.Fatal("the NACKing client routes with the version it rejected")
	}
	if _, ok := nacker.Held(payName); ok {
		t.Fatal("the NACKing client holds the version it rejected")
	}

	// The next change is sent, and NACKed again; everyone else gets it and ACKs.
	pods := pay.Pods()
	if err := pay.SetReady(t.Context(), pods[0], false); err != nil {
		t.Fatal(err)
	}
	rest := []string{pods[1].IP, pods[2].IP}
	waitAll(t, "the change at the other clients", good, holds(payName, rest, nil))
	waitAll(t, "the second NACK", bad, func(s envoysim.State) bool { return s.Stats().NACKs >= 2 })
	s1 := nacker.Stats()
	awaitMarker(t, bad, nacker, translate.ClusterName(ns, "marker-2", "http"))
	if s := nacker.Stats(); s.NACKs != 2 || s.Responses != s1.Responses+1 {
		t.Errorf("the NACKing client sent %d NACKs after one change (want 2) and got %d responses besides the marker's (want 0)",
			s.NACKs, s.Responses-s1.Responses-1)
	}
	m := metrics(t, p)
	if got := m.Value("deltaeds_xds_nacks_total"); got != 2 {
		t.Errorf("deltaeds_xds_nacks_total = %v, want 2", got)
	}
	for i, c := range good.Clients {
		if s := c.Stats(); s.NACKs != 0 || s.Reconnects != 0 {
			t.Errorf("client %d: %d NACKs, %d reconnects; want none", i, s.NACKs, s.Reconnects)
		}
	}
	// The NACKing client still routes to what it accepted, still holds it (deltaeds sent no
	// removal), and its stream is the first one.
	if s := nacker.Stats(); s.Reconnects != 0 {
		t.Errorf("the NACKing client reconnected %d times", s.Reconnects)
	}
	if r, ok := nacker.Route(shopName); !ok || !harness.SameIPs(harness.IPsAt(r.CLA, 0), shop.IPs()) {
		t.Errorf("the NACKing client routes shop to %s, want the %d pods it accepted", harness.Summary(r.CLA), len(shop.IPs()))
	}
	if _, ok := nacker.Held(shopName); !ok {
		t.Error("the NACKing client lost shop from its xDS state, which it had accepted")
	}
}
