package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Flapping: kube-apiserver down flapDown, then up (ready) for flapUp, for flapFor.
const (
	flapDown = 5 * time.Second
	flapUp   = 5 * time.Second
	flapFor  = time.Minute
)

// Scenario 12b: kube-apiserver flaps (down 5 s, up 5 s once ready again, for a minute) while
// Services roll. deltaeds is never restarted and no stream ends; no client is ever sent a CLA
// without endpoints for a Service that always has some, nor a removal, nor a resource it already
// holds; after the flapping every client converges on the last state written.
//
// The Services' slices are written by the test (a rollout in the Deployment way, maxSurge 1 and
// maxUnavailable 0: add a ready pod, mark an old one terminating, remove it), each write retried
// until the API server takes it, so what is measured is deltaeds and not
// kube-controller-manager, whose informers back off on their own after every restart.
func TestAPIServerFlapping(t *testing.T) {
	const ns = "s12-flapping"
	const services, replicas = 4, 3
	e := scenario(t, ns)
	client := e.cp.Client()
	var rollers []*roller
	for i := range services {
		r := &roller{client: client, ns: ns, service: fmt.Sprintf("svc-%d", i), next: 1 + i*100}
		for range replicas {
			r.ready = append(r.ready, r.newIP())
		}
		if err := r.settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		rollers = append(rollers, r)
	}
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s12-flapping"})
	pid := p.Pid()
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 3, Target: p.XDSAddress(), NodePrefix: "s12-flapping", OnApply: rec.onApply})
	for _, r := range rollers {
		f.Subscribe(r.name())
	}
	for _, r := range rollers {
		ips0, ips1 := r.state()
		waitAll(t, "the first endpoints of "+r.service, f, holds(r.name(), ips0, ips1))
	}
	mark := rec.mark()
	errsBefore := metrics(t, p).Value("deltaeds_endpointslice_watch_errors_total")

	// Roll every Service until the flapping ends.
	ctx, stopRolling := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	rollErrs := make([]error, len(rollers))
	for i, r := range rollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rollErrs[i] = r.roll(ctx)
		}()
	}
	start := time.Now()
	cycles := 0
	var answered []time.Time // when kube-apiserver answered /readyz again, per cycle
	for time.Since(start) < flapFor {
		down, up := stopAPIServer(t, e)
		if !sleepCtx(t.Context(), time.Until(down.Add(flapDown))) {
			break
		}
		answering := up()
		answered = append(answered, answering)
		cycles++
		t.Logf("cycle %d: down %s (restart included)", cycles, answering.Sub(down).Round(100*time.Millisecond))
		if !p.Alive() {
			t.Fatalf("deltaeds exited while the API server flapped: %v", p.ExitErr())
		}
		sleepCtx(t.Context(), flapUp)
	}
	stopRolling()
	wg.Wait()
	for i, err := range rollErrs {
		if err != nil {
			t.Fatalf("rolling %s: %v", rollers[i].service, err)
		}
	}
	for _, r := range rollers {
		if err := harness.Eventually(waitCtx(t), func() error { return r.settle(t.Context()) }); err != nil {
			t.Fatalf("writing %s's last state: %v", r.service, err)
		}
	}
	settled := time.Now()
	steps := 0
	for _, r := range rollers {
		ips0, ips1 := r.state()
		waitAll(t, "convergence on "+r.service, f, holds(r.name(), ips0, ips1))
		steps += r.steps
	}
	t.Logf("%d down/up cycles in %s, %d rollout steps written; every client converged %s after the last write",
		cycles, settled.Sub(start).Round(100*time.Millisecond), steps, time.Since(settled).Round(10*time.Millisecond))

	if p.Pid() != pid || !p.Alive() {
		t.Errorf("deltaeds restarted or exited (pid %d, was %d): %v", p.Pid(), pid, p.ExitErr())
	}
	for i, c := range f.Clients {
		if st := c.Stats(); st.Reconnects != 0 {
			t.Errorf("client %d reconnected %d times", i, st.Reconnects)
		}
	}
	// What the clients were sent meanwhile: never an empty CLA or a removal, never what they held.
	updates := 0
	last := map[string]string{} // client/name -> version
	for j, ev := range rec.since(0, -1, "") {
		key := fmt.Sprintf("%d/%s", ev.client, ev.name)
		prev := last[key]
		last[key] = ev.version
		if j < mark {
			continue // the first endpoints
		}
		updates++
		switch {
		case ev.removed:
			t.Errorf("client %d was sent a removal of %s", ev.client, ev.name)
		case ev.endpoints == 0:
			t.Errorf("client %d was sent %s with no endpoints", ev.client, ev.name)
		case ev.version == prev:
			t.Errorf("client %d was resent %s@%s, which it held", ev.client, ev.name, short(ev.version))
		}
	}
	errs := metrics(t, p).Value("deltaeds_endpointslice_watch_errors_total") - errsBefore
	t.Logf("%d updates reached the %d clients; %v failed API-server probes or watches counted", updates, len(f.Clients), errs)
	// Per cycle: from /readyz answering to the first update a client received after it (the
	// rollers retry their writes every 200 ms, so part of it is theirs).
	var firsts []string
	for _, at := range answered {
		first := time.Time{}
		for _, ev := range rec.since(mark, -1, "") {
			if ev.at.After(at) && (first.IsZero() || ev.at.Before(first)) {
				first = ev.at
			}
		}
		if first.IsZero() {
			firsts = append(firsts, "none")
			continue
		}
		firsts = append(firsts, first.Sub(at).Round(10*time.Millisecond).String())
	}
	t.Logf("first update at a client after kube-apiserver answered again, per cycle: %v", firsts)
	settleControllers(t, e, ns)
}

// roller rolls one Service's hand-written EndpointSlice the way a Deployment does with maxSurge
// 1 and maxUnavailable 0: a new ready endpoint, then an old one terminating (serving), then gone.
type roller struct {
	client  kubernetes.Interface
	ns      string
	service string
	next    int // the next IP's last part

	mu          sync.Mutex
	ready       []string
	terminating []string
	steps       int // writes the API server took
}

func (r *roller) name() string { return translate.ClusterName(r.ns, r.service, httpPort.Name) }

func (r *roller) newIP() string {
	ip := fmt.Sprintf("10.121.%d.%d", r.next/250, r.next%250+1)
	r.next++
	return ip
}

// state returns the endpoints written last: ready ones (priority 0) and terminating ones
// (priority 1).
func (r *roller) state() (ready, terminating []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ready...), append([]string(nil), r.terminating...)
}

// roll writes rollout steps until ctx ends; a write the API server refuses is retried. The
// state is what was written last (see settle).
func (r *roller) roll(ctx context.Context) error {
	for step := 0; ; step++ {
		r.mu.Lock()
		ready, terminating := append([]string(nil), r.ready...), append([]string(nil), r.terminating...)
		switch step % 3 {
		case 0:
			ready = append(ready, r.newIP())
		case 1:
			terminating = append(terminating, ready[0])
			ready = ready[1:]
		case 2:
			terminating = terminating[1:]
		}
		r.mu.Unlock()
		for r.write(ctx, ready, terminating) != nil {
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return nil
			}
		}
		r.mu.Lock()
		r.ready, r.terminating = ready, terminating
		r.steps++
		r.mu.Unlock()
		if !sleepCtx(ctx, 300*time.Millisecond) {
			return nil
		}
	}
}

// settle writes the state once more, so that it is what the API server holds even if roll
// was stopped after a write the API server took but did not confirm.
func (r *roller) settle(ctx context.Context) error {
	ready, terminating := r.state()
	return r.write(ctx, ready, terminating)
}

// write creates or updates the Service's slice.
func (r *roller) write(ctx context.Context, ready, terminating []string) error {
	s := manualSlice(r.ns, r.service, r.service, discoveryv1.AddressTypeIPv4, ready...)
	for _, ip := range terminating {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)},
		})
	}
	slices := r.client.DiscoveryV1().EndpointSlices(r.ns)
	cur, err := slices.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = slices.Create(ctx, s, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur.Endpoints = s.Endpoints
	_, err = slices.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// sleepCtx sleeps for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
