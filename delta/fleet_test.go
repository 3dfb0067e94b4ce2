package delta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/xds"
)

// converged reports whether a client routes with exactly the store's current
// version of each name it wants, and with no endpoint at all for each wanted
// name the store lacks (an empty CLA: Envoy ignores removals, so only that
// stops it routing to what it had). For a name the store has, the client's
// xDS state must hold the same version too, since that is what it declares
// on reconnect.
func converged(store *xds.Store, want []string) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		for _, n := range want {
			res := store.Get(EndpointType, n)
			r, routed := s.Route(n)
			switch {
			case !routed:
				return false
			case res == nil:
				for _, g := range r.CLA.GetEndpoints() {
					if len(g.GetLbEndpoints()) > 0 {
						return false
					}
				}
			case r.Version != res.Version:
				return false
			default:
				if h, ok := s.Held(n); !ok || h.Version != res.Version {
					return false
				}
			}
		}
		return true
	}
}

// divergence lists the names of want on which the client has not
// converged, with the store's version and the client's views of each.
func divergence(store *xds.Store, want []string, c *envoysim.Client) string {
	var b strings.Builder
	// A predicate that always holds reads the state once, under its lock.
	_ = c.WaitFor(context.Background(), func(s envoysim.State) bool {
		for _, n := range want {
			if converged(store, []string{n})(s) {
				continue
			}
			fmt.Fprintf(&b, "  %s: store ", n)
			if res := store.Get(EndpointType, n); res != nil {
				b.WriteString(res.Version)
			} else {
				b.WriteString("<none>")
			}
			if r, ok := s.Route(n); ok {
				fmt.Fprintf(&b, ", route %s (%d localities)", r.Version, len(r.CLA.GetEndpoints()))
			} else {
				b.WriteString(", no route")
			}
			if h, ok := s.Held(n); ok {
				fmt.Fprintf(&b, ", held %s", h.Version)
			} else {
				fmt.Fprintf(&b, ", not held (removed: %v)", s.Removed(n))
			}
			b.WriteString("\n")
		}
		return true
	})
	return b.String()
}

func startClient(t *testing.T, f *fixture, cfg envoysim.Config) *envoysim.Client {
	t.Helper()
	cfg.Target = f.addr
	c := envoysim.New(cfg)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		if v := c.Violations(); len(v) > 0 {
			t.Errorf("%s saw protocol violations: %v", cfg.NodeID, v)
		}
	})
	return c
}

// TestFleetConvergesUnderChurn runs Envoy-like clients with overlapping
// subscriptions against random churn (sets, deletes, re-creations, content
// flapping back to earlier versions), with one client NACKing some responses
// and one reconnecting midway, and requires every client to end routing with
// exactly the store's state, nothing for the names deleted last, with no
// protocol violation.
func TestFleetConvergesUnderChurn(t *testing.T) {
	f := newFixture(t, Config{MaxResponseBytes: 2048})
	const nNames = 60
	all := make([]string, nNames)
	for i := range all {
		all[i] = fmt.Sprintf("ns/svc-%02d/http", i)
	}
	f.set(1, all[:40]...)
	f.store.MarkSynced()

	rng := rand.New(rand.NewPCG(1, 2))
	var nacked atomic.Int32 // responses client 0 has rejected
	var clients []*envoysim.Client
	var wants [][]string
	for i := 0; i < 6; i++ {
		want := append([]string(nil), all[i*8:i*8+20]...)
		cfg := envoysim.Config{NodeID: fmt.Sprintf("envoy-%d", i)}
		if i == 0 {
			cfg.NACK = func(resp *discoveryv3.DeltaDiscoveryResponse) error {
				if nacked.Load() < 3 && len(resp.Resources) > 0 {
					nacked.Add(1)
					return errors.New("simulated rejection")
				}
				return nil
			}
		}
		c := startClient(t, f, cfg)
		c.Subscribe(want...)
		clients = append(clients, c)
		wants = append(wants, want)
	}

	// Churn at least 300 rounds, and on until client 0 has NACKed three
	// responses (how the churn coalesces into responses depends on timing).
	deadline := time.Now().Add(testTimeout)
	for round := 0; round < 300 || nacked.Load() < 3; round++ {
		if time.Now().After(deadline) {
			t.Fatal("client 0 did not NACK three responses")
		}
		n := all[rng.IntN(nNames)]
		switch rng.IntN(5) {
		case 0:
			f.del(n)
		default:
			f.set(uint32(1+rng.IntN(4)), n) // few ports: versions flap back
		}
		if round == 150 {
			clients[1].Disconnect()
		}
	}
	// The NACKing client rejected some content for good, as Envoy would: it
	// is not resent. Once its three NACKs are in, give every name a final
	// fresh change, so every client must converge on content never NACKed.
	waitFor(t, func() bool { return f.counter("deltaeds_xds_nacks_total") == 3 })
	f.set(100, all...)
	// Then delete some names: the clients that want them must end routing
	// to nothing, which only an empty CLA achieves (Envoy ignores removals).
	// Not names client 0 wants: a name's empty CLA has one content, hence
	// one version, which client 0 may have rejected during the churn, and
	// rejected content is not sent again.
	var gone []string
	for i := 23; i < nNames; i += 7 {
		gone = append(gone, all[i])
	}
	f.del(gone...)

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for i, c := range clients {
		if err := c.WaitFor(ctx, converged(f.store, wants[i])); err != nil {
			t.Fatalf("client %d did not converge: %v (stats %+v)\n%s\nserver streams: %+v\nnacks %v acks %v stale %v", i, err, c.Stats(),
				divergence(f.store, wants[i], c), f.server.Streams(),
				f.counter("deltaeds_xds_nacks_total"), f.counter("deltaeds_xds_acks_total"), f.counter("deltaeds_xds_stale_nonces_total"))
		}
	}
	if nacks := f.counter("deltaeds_xds_nacks_total"); nacks != 3 {
		t.Fatalf("nacks = %v, want 3", nacks)
	}
}

// TestReconnectingFleetIsResentNothing connects clients, drops their
// streams, and checks the server sends them no resource on reconnect.
func TestReconnectingFleetIsResentNothing(t *testing.T) {
	f := newFixture(t, Config{})
	names := []string{"a", "b", "c"}
	f.set(1, names...)
	f.store.MarkSynced()
	c := startClient(t, f, envoysim.Config{NodeID: "envoy"})
	c.Subscribe(names...)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := c.WaitFor(ctx, converged(f.store, names)); err != nil {
		t.Fatal(err)
	}
	before := c.Stats()
	c.Disconnect()
	if err := c.WaitFor(ctx, func(s envoysim.State) bool { return s.Stats().Streams > before.Streams }); err != nil {
		t.Fatal(err)
	}
	// A change after the reconnect is the first thing the new stream gets.
	f.set(2, "c")
	if err := c.WaitFor(ctx, converged(f.store, names)); err != nil {
		t.Fatal(err)
	}
	after := c.Stats()
	if got := after.Resources - before.Resources; got != 1 {
		t.Fatalf("%d resources received after reconnect, want only the changed one", got)
	}
}
