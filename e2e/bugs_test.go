package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Tests for bugs found by the e2e runs, kept as regressions. Each says what was wrong.

// TestShutdownWithStreamsIsRaceFree: stopping deltaeds (SIGTERM) while clients hold streams
// must be free of data races. Found by running scenario 5 against a race-built deltaeds:
// delta.Server.Stop closed s.stopped and then called s.wg.Wait() on a new goroutine, while
// delta.(*Server).serve checked s.stopped without the lock and then called s.wg.Add(1) under
// s.mu, which Stop never took. An Add that starts from a zero counter was unordered with respect
// to the Wait (the race detector reported it; the sync package documents such an Add as misuse),
// so a stream arriving during shutdown could escape Stop's wait, or panic with "WaitGroup is
// reused before previous Wait has returned". Fixed in 319f5fd (both now under s.mu); this
// failed 3 runs out of 3 before the fix, typically within its 5 restarts.
func TestShutdownWithStreamsIsRaceFree(t *testing.T) {
	const ns = "bug-stop-race"
	e := scenario(t, ns)
	d := e.service(t, ns, "svc", 2)
	name := translate.ClusterName(ns, "svc", "http")
	bin, err := harness.BuildDeltaedsRace(waitCtx(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p, err := harness.StartDeltaeds(waitCtx(t), harness.DeltaedsOptions{
			Name: fmt.Sprintf("deltaeds-race-%d", i), Binary: bin, Kubeconfig: e.cp.KubeconfigPath(),
			LogDir: t.TempDir(), Logger: logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		f, err := envoyfleet.Start(t.Context(), envoyfleet.Options{Size: 5, Target: p.XDSAddress(), NodePrefix: "race", Logger: logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		f.Subscribe(name)
		err = f.WaitAll(waitCtx(t), holds(name, d.IPs(), nil))
		stopErr := p.Stop()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if stopErr != nil {
			log := p.LogTail(400)
			if i := strings.Index(log, "WARNING: DATA RACE"); i >= 0 {
				log = log[i:]
			}
			t.Fatalf("run %d: stopping deltaeds with 5 streams open: %v\n%s", i, stopErr, log)
		}
	}
}

// TestResubscribeResends: Envoy may drop a resource and want it back before it has told the
// server it dropped it. Its delta subscription state (delta_subscription_state.cc,
// updateSubscriptionInterest) turns "removed then added before the next request" into a plain
// subscribe, "because our user may have forgotten its copy of the resource after instructing us
// to remove it, and need to be reminded of it". So a subscribe for a name the stream is already
// subscribed to must be answered with the resource, as must a subscribe after an unsubscribe.
//
// deltaeds answered the second but not the first: xds.(*Subscription).Update skipped a
// subscribed name already in sub.names, so sub.sent still said the client held the current
// version and Next never resent it. A real Envoy whose EDS cluster is removed and re-added
// between two requests then waited out initial_fetch_timeout and came up with no endpoints
// until the Service next changed. Fixed: Update forgets what the client holds of a name
// subscribed to again (unless the same request declares it in initial_resource_versions).
func TestResubscribeResends(t *testing.T) {
	const ns = "bug-resubscribe"
	e := scenario(t, ns)
	e.service(t, ns, "svc", 2)
	name := translate.ClusterName(ns, "svc", "http")
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-resubscribe"})
	conn, err := grpc.NewClient(p.XDSAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// expect reads responses, ACKing each, until one carries name.
	expect := func(t *testing.T, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, what string) {
		t.Helper()
		type result struct {
			resp *discoveryv3.DeltaDiscoveryResponse
			err  error
		}
		for {
			ch := make(chan result, 1)
			go func() { r, err := s.Recv(); ch <- result{r, err} }()
			select {
			case r := <-ch:
				if r.err != nil {
					t.Fatalf("%s: %v", what, r.err)
				}
				if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResponseNonce: r.resp.GetNonce()}); err != nil {
					t.Fatal(err)
				}
				for _, res := range r.resp.GetResources() {
					if res.GetName() == name {
						return
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no response carrying %s within 10s", what, name)
			}
		}
	}
	open := func(t *testing.T, id string) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
		s := deltaStream(t, conn)
		if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: envoysim.TypeURLClusterLoadAssignment,
			ResourceNamesSubscribe: []string{name}}); err != nil {
			t.Fatal(err)
		}
		expect(t, s, "the first subscription")
		return s
	}

	t.Run("unsubscribe, then subscribe again", func(t *testing.T) {
		s := open(t, "resubscribe-1")
		for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
			{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesUnsubscribe: []string{name}},
			{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesSubscribe: []string{name}},
		} {
			if err := s.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		expect(t, s, "after unsubscribing and subscribing again")
	})
	t.Run("subscribe again without unsubscribing (Envoy's removed-then-added)", func(t *testing.T) {
		s := open(t, "resubscribe-2")
		if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesSubscribe: []string{name}}); err != nil {
			t.Fatal(err)
		}
		expect(t, s, "after subscribing again")
	})
}
