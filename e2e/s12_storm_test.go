package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// stormClients is how many clients reconnect at once in the storm scenario.
const stormClients = 2000

// Scenario 12f: a connection storm. 2,000 clients, each holding 5 CLAs, dial deltaeds through a
// proxy standing for its Service; the proxy then cuts every connection at once (a load balancer
// losing its state, a network blip) and all of them reconnect within Envoy's first backoff
// (under 500 ms), each declaring what it holds in initial_resource_versions. Each also
// subscribes to a canary Service it never asked for before, so that it has an answer to wait
// for. Every client is served, none is resent anything it holds (its only news is the canary),
// and the time from the cut to each client's canary is reported: the bound no stream exceeded.
func TestConnectionStorm(t *testing.T) {
	const ns = "s12-storm"
	const services = 5
	e := scenario(t, ns)
	slicesAPI := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	var names []string
	for i := range services + 1 {
		svc := fmt.Sprintf("svc-%d", i)
		if i == services {
			svc = "canary"
		}
		if _, err := slicesAPI.Create(t.Context(), manualSlice(ns, svc, svc, discoveryv1.AddressTypeIPv4,
			fmt.Sprintf("10.124.%d.1", i), fmt.Sprintf("10.124.%d.2", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, translate.ClusterName(ns, svc, httpPort.Name))
	}
	canary, names := names[services], names[:services]
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s12-storm"})
	proxy, err := harness.NewProxy(p.XDSAddress(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	rec := &recorder{}
	start := time.Now()
	// Each client names its CLAs in its first request, as an Envoy starting with them does.
	f := e.fleet(t, envoyfleet.Options{Size: stormClients, Target: proxy.Addr(), NodePrefix: "s12-storm",
		Subscribe: func(int) []string { return names }, OnApply: rec.onApply, Logger: zap.NewNop()})
	var all []func(envoysim.State) bool
	for _, n := range names {
		all = append(all, func(s envoysim.State) bool { _, ok := s.Held(n); return ok })
	}
	waitAll(t, "every client's first CLAs", f, holdsAll(all...))
	t.Logf("%d clients connected and got their %d CLAs in %s", stormClients, services, time.Since(start).Round(100*time.Millisecond))
	streams := make([]uint64, stormClients)
	for i, c := range f.Clients {
		streams[i] = c.Stats().Streams
	}
	sent := metrics(t, p).Value("deltaeds_xds_resources_sent_total")
	mark := rec.mark()

	cut := time.Now()
	proxy.SetBackend(p.XDSAddress()) // cuts every connection; new ones go to the same deltaeds
	f.Subscribe(canary)
	// deltaeds' stream count, sampled meanwhile: when half and all of the streams were open
	// again tells connection setup (TCP through the proxy, HTTP/2, the stream) from answering.
	sampled := make(chan [2]time.Duration, 1)
	ctx, stopSampling := context.WithCancel(t.Context())
	go func() {
		var half, full time.Duration
		defer func() { sampled <- [2]time.Duration{half, full} }()
		for low := false; full == 0; {
			if m, err := p.Metrics(ctx); err == nil {
				n := m.Value("deltaeds_xds_streams")
				low = low || n < stormClients
				if low && half == 0 && n >= stormClients/2 {
					half = time.Since(cut)
				}
				if low && n >= stormClients {
					full = time.Since(cut)
				}
			}
			if !sleepCtx(ctx, 250*time.Millisecond) {
				return
			}
		}
	}()
	waitAll(t, "the canary after the storm", f, func(s envoysim.State) bool { _, ok := s.Held(canary); return ok })
	served := time.Since(cut)
	stopSampling()
	streamsAt := <-sampled

	var firsts []time.Duration
	for i, c := range f.Clients {
		if s := c.Stats(); s.Streams == streams[i] {
			t.Errorf("client %d did not reconnect", i)
		}
		evs := rec.since(mark, i, "")
		var got []string
		for _, ev := range evs {
			got = append(got, ev.name)
		}
		if !slices.Equal(got, []string{canary}) {
			t.Errorf("client %d received %v after reconnecting, want only the canary", i, got)
			continue
		}
		firsts = append(firsts, evs[0].at.Sub(cut))
	}
	slices.Sort(firsts)
	if len(firsts) > 0 {
		q := func(p float64) time.Duration { return firsts[int(p*float64(len(firsts)-1))].Round(time.Millisecond) }
		t.Logf("storm: %d clients reconnected declaring %d versions each; first answer (the canary) after the cut: p50 %s, p99 %s, max %s; all served in %s; deltaeds had half the streams back after %s, all after %s (0: not seen, sampled every 250 ms)",
			stormClients, services, q(0.5), q(0.99), q(1), served.Round(10*time.Millisecond),
			streamsAt[0].Round(10*time.Millisecond), streamsAt[1].Round(10*time.Millisecond))
	}
	if d := metrics(t, p).Value("deltaeds_xds_resources_sent_total") - sent; d != stormClients {
		t.Errorf("deltaeds sent %v resources after the cut, want %d (one canary per client)", d, stormClients)
	}
}
