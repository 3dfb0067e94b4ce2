package delta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/xds"
)

// converged reports whether a client holds exactly the store's current
// version of each name it wants, and a removal for each wanted name the
// store lacks.
func converged(store *xds.Store, want []string) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		for _, n := range want {
			r := store.Get(EndpointType, n)
			h, ok := s.Get(n)
			switch {
			case r == nil && (ok || !s.Removed(n)):
				return false
			case r != nil && (!ok || h.Version != r.Version):
				return false
			}
		}
		return true
	}
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
// and one reconnecting midway, and requires every client to end holding
// exactly the store's state with no protocol violation.
func TestFleetConvergesUnderChurn(t *testing.T) {
	f := newFixture(t, Options{MaxResponseBytes: 2048})
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

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for i, c := range clients {
		if err := c.WaitFor(ctx, converged(f.store, wants[i])); err != nil {
			t.Fatalf("client %d did not converge: %v (stats %+v)\nserver streams: %+v\nnacks %v acks %v stale %v", i, err, c.Stats(), f.server.Streams(),
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
	f := newFixture(t, Options{})
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
