package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// outage is how long kube-apiserver stays down in scenario 4.
const outage = 30 * time.Second

// Scenario 4: kube-apiserver stopped for 30 s. deltaeds stays up and ready, streams stay open, a
// client connecting during the outage gets the last known endpoints; after the API server is
// back, changes made then reach every client.
func TestAPIServerOutage(t *testing.T) {
	const ns = "s4-outage"
	e := scenario(t, ns)
	d := e.service(t, ns, "cart", 4)
	name := translate.ClusterName(ns, "cart", "http")
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s4", ExtraArgs: []string{"--apiserver-probe-interval", "1s"}})
	f := e.fleet(t, envoyfleet.Options{Size: 5, Target: p.XDSAddress(), NodePrefix: "s4"})
	f.Subscribe(name)
	waitAll(t, "the Service", f, holds(name, d.IPs(), nil))
	// The version the server sent (the xDS state), to compare with what a late client is sent.
	before, _ := f.Clients[0].Held(name)
	streams := make([]uint64, len(f.Clients))
	for i, c := range f.Clients {
		streams[i] = c.Stats().Streams
	}
	errsBefore := metrics(t, p).Value("deltaeds_endpointslice_watch_errors_total")

	if err := e.cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			// Later scenarios share the control plane.
			if err := e.cp.StartAPIServer(); err != nil {
				t.Errorf("restarting kube-apiserver: %v", err)
			}
		}
	})

	// deltaeds notices, and stays ready: serving the last known endpoints is right now.
	ctx := waitCtx(t)
	var body string
	if err := harness.Eventually(ctx, func() error {
		code, b, err := p.Get(ctx, "/readyz")
		body = string(b)
		switch {
		case err != nil:
			return err
		case code != http.StatusOK:
			t.Fatalf("/readyz answered %d during the outage: %s", code, body)
		case !strings.Contains(body, "unreachable"):
			return errString("the outage is not reported yet: " + body)
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for /readyz to report the outage: %v", err)
	}
	t.Logf("/readyz during the outage: %s", strings.TrimSpace(body))

	// A client joining now gets the last known endpoints, at the same version.
	late := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s4-late"})
	late.Subscribe(name)
	waitAll(t, "the last known endpoints for a client joining during the outage", late, holds(name, d.IPs(), nil))
	if h, _ := late.Clients[0].Held(name); h.Version != before.Version {
		t.Errorf("the late client got version %s, the others hold %s", h.Version, before.Version)
	}

	// Sit out the rest of the outage; deltaeds must neither exit nor drop a stream.
	select {
	case <-p.Done():
		t.Fatalf("deltaeds exited during the outage: %v", p.ExitErr())
	case <-time.After(time.Until(down.Add(outage))):
	}
	for i, c := range f.Clients {
		if s := c.Stats(); s.Streams != streams[i] {
			t.Errorf("client %d: %d streams opened during the outage, want none (its stream must stay open)", i, s.Streams-streams[i])
		}
	}
	if err := e.cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	t.Logf("kube-apiserver was down for %s", time.Since(down).Round(100*time.Millisecond))

	// Changes made after the API server is back reach every client, old and late: one pod
	// unready, one new pod.
	pods := d.Pods()
	var retryErr error
	if err := harness.Eventually(waitCtx(t), func() error {
		retryErr = d.SetReady(t.Context(), pods[0], false)
		return retryErr
	}); err != nil {
		t.Fatalf("the API server did not take a change after its restart: %v", err)
	}
	added, err := d.Scale(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, pod := range pods[1:] {
		want = append(want, pod.IP)
	}
	want = append(want, added[0].IP)
	changed := time.Now()
	// client-go's reflectors back off up to a minute between relists after a long outage, so
	// the controller can take that long to see the pods again; deltaeds' part is measured from
	// the moment the EndpointSlices show the change.
	waitReadyEndpoints(t, e, ns, want)
	sliced := time.Now()
	waitAll(t, "the changes made after the outage", f, holds(name, want, nil))
	waitAll(t, "the changes made after the outage (late client)", late, holds(name, want, nil))
	t.Logf("changes made after the restart: in the EndpointSlices after %s, at every client %s later",
		sliced.Sub(changed).Round(100*time.Millisecond), time.Since(sliced).Round(100*time.Millisecond))

	if got := metrics(t, p).Value("deltaeds_endpointslice_watch_errors_total"); got <= errsBefore {
		t.Errorf("deltaeds_endpointslice_watch_errors_total = %v after a %s outage, was %v: failed watches are not counted", got, outage, errsBefore)
	}
	if err := harness.Eventually(waitCtx(t), func() error {
		_, b, err := p.Get(t.Context(), "/readyz")
		if err == nil && !strings.Contains(string(b), "API server: reachable") {
			err = errString("still reported unreachable: " + string(b))
		}
		return err
	}); err != nil {
		t.Errorf("/readyz after the outage: %v", err)
	}

	// Leave the shared control plane as found: the controller's informers recover one by one
	// after an outage, and until its EndpointSlice informer has relisted, updates to slices it
	// created since are refused as stale and retried with backoff. A new Service whose pod then
	// turns unready goes through both paths.
	start := time.Now()
	probe := e.service(t, ns, "settle", 1)
	waitReadyEndpoints(t, e, ns, append(want, probe.IPs()...))
	if err := probe.SetReady(t.Context(), probe.Pods()[0], false); err != nil {
		t.Fatal(err)
	}
	waitReadyEndpoints(t, e, ns, want)
	t.Logf("the EndpointSlice controller is fully back %s after the checks", time.Since(start).Round(100*time.Millisecond))
}

type errString string

func (e errString) Error() string { return string(e) }
