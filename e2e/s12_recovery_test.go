package e2e

import (
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// recoveryOutage is how long kube-apiserver stays down in the recovery scenario: the outage the
// issue reported (first change 34 s after the API server answered again, behind client-go's
// reflector backoff).
const recoveryOutage = 20 * time.Second

// Scenario 12a: how soon deltaeds follows the API server after an outage. kube-apiserver is
// stopped for 20 s and started again; the first EndpointSlice change after it answers must reach
// every client. The slice is written by hand (managed by the test, not the EndpointSlice
// controller), so the figure is deltaeds' own and not kube-controller-manager's, whose
// informers back off after an outage as well. deltaeds runs with the default
// --apiserver-probe-interval (10 s): recovery must not depend on it.
//
// Reported: the time from the API server answering (/readyz) to the change being written, and
// from the write being accepted to every client routing to the new endpoints. Timing is not
// asserted (2 busy cores); delivery is.
func TestAPIServerRecovery(t *testing.T) {
	const ns = "s12-recovery"
	e := scenario(t, ns)
	slices := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	s, err := slices.Create(t.Context(), manualSlice(ns, "orders-1", "orders", discoveryv1.AddressTypeIPv4, "10.120.0.1", "10.120.0.2"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := translate.ClusterName(ns, "orders", httpPort.Name)
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s12-recovery"})
	f := e.fleet(t, envoyfleet.Options{Size: 3, Target: p.XDSAddress(), NodePrefix: "s12-recovery"})
	f.Subscribe(name)
	waitAll(t, "the first endpoints", f, holds(name, []string{"10.120.0.1", "10.120.0.2"}, nil))

	down, start := stopAPIServer(t, e)
	select {
	case <-p.Done():
		t.Fatalf("deltaeds exited during the outage: %v", p.ExitErr())
	case <-time.After(time.Until(down.Add(recoveryOutage))):
	}
	answering := start()

	// The first change after the outage: a write the API server accepts.
	s.Endpoints = manualSlice(ns, s.Name, "orders", discoveryv1.AddressTypeIPv4, "10.120.0.3").Endpoints
	var written time.Time
	if err := harness.Eventually(waitCtx(t), func() error {
		cur, err := slices.Get(t.Context(), s.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Endpoints = s.Endpoints
		if _, err := slices.Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		written = time.Now()
		return nil
	}); err != nil {
		t.Fatalf("the API server did not take a change after its restart: %v", err)
	}
	waitAll(t, "the first change after the outage", f, holds(name, []string{"10.120.0.3"}, nil))
	t.Logf("API server down %s; the change was written %s after /readyz answered; every client routed to it %s after the write (%s after /readyz)",
		answering.Sub(down).Round(100*time.Millisecond), written.Sub(answering).Round(10*time.Millisecond),
		time.Since(written).Round(10*time.Millisecond), time.Since(answering).Round(10*time.Millisecond))
	for i, c := range f.Clients {
		if st := c.Stats(); st.Reconnects != 0 {
			t.Errorf("client %d reconnected %d times: an API-server outage must not end xDS streams", i, st.Reconnects)
		}
	}
	settleControllers(t, e, ns)
}

// stopAPIServer stops the shared kube-apiserver and returns when it stopped, and start, which
// starts it again and returns when it answers /readyz. If the test ends before start ran, a
// cleanup starts it: later scenarios share it.
func stopAPIServer(t *testing.T, e *environment) (down time.Time, start func() time.Time) {
	t.Helper()
	if err := e.cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down = time.Now()
	running := false
	t.Cleanup(func() {
		if !running {
			if err := e.cp.StartAPIServer(); err != nil {
				t.Errorf("restarting kube-apiserver: %v", err)
			}
		}
	})
	return down, func() time.Time {
		t.Helper()
		if err := e.cp.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		running = true
		return time.Now()
	}
}

// settleControllers leaves the shared control plane as found after an API-server outage:
// kube-controller-manager's informers recover one by one, and until its EndpointSlice informer
// has relisted, updates to slices it created since are refused as stale and retried with backoff.
// A new Service whose pod then turns unready goes through both paths. The Service is deleted
// again; ns must hold no other controller-managed endpoints.
func settleControllers(t *testing.T, e *environment, ns string) {
	t.Helper()
	start := time.Now()
	probe := e.service(t, ns, "settle", 1)
	waitReadyEndpointsOf(t, e, ns, "settle", probe.IPs())
	if err := probe.SetReady(t.Context(), probe.Pods()[0], false); err != nil {
		t.Fatal(err)
	}
	waitReadyEndpointsOf(t, e, ns, "settle", nil)
	t.Logf("the EndpointSlice controller is fully back %s after the checks", time.Since(start).Round(100*time.Millisecond))
}
