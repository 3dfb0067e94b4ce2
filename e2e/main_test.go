package e2e

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/internal/scrape"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// waitTimeout bounds every wait for something that must happen. It is generous on purpose: on 2
// busy cores a slow step is not a failure. It is never used to assert that something is fast.
const waitTimeout = 3 * time.Minute

// zones are the zones of the shared nodes (two nodes each).
var zones = []string{"zone-a", "zone-b", "zone-c"}

// environment is what the scenarios share: one control plane, its nodes, and the binary.
type environment struct {
	cp      *controlplane.ControlPlane
	cluster *harness.Cluster
	bin     string
	dir     string
}

var (
	envOnce sync.Once
	envErr  error
	shared  *environment
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	start := time.Now()
	code := m.Run()
	if shared != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping the control plane: %v\n", err)
			code = 1
		}
		if err := os.RemoveAll(shared.dir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: removing %s: %v\n", shared.dir, err)
			code = 1
		}
	}
	// Every child (etcd, kube-apiserver, kube-controller-manager, deltaeds) must be gone and
	// reaped by now.
	kids, err := supervisor.Children()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: listing child processes: %v\n", err)
		code = 1
	}
	for _, k := range kids {
		fmt.Fprintf(os.Stderr, "e2e: child process survived the run: %s\n", k)
		code = 1
	}
	if err := goleak.Find(leakOptions()...); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: goroutines left after the run: %v\n", err)
		code = 1
	}
	if shared != nil {
		fmt.Fprintf(os.Stderr, "e2e: wall time %s (control plane, build and every scenario run)\n", time.Since(start).Round(time.Second))
	}
	return code
}

// leakOptions ignores goroutines that belong to long-lived libraries, not to the harness: the
// HTTP/2 connections of the shared kube-apiserver client (redialled after an outage), and the
// log flushers of klog and glog that client-go starts once per process.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	}
}

// env starts the shared environment on first use: the deltaeds build and the control plane
// (with the EndpointSlice controllers and the garbage collector, which deletes a deleted
// Service's slices) run side by side, then six zoned nodes are registered.
func env(t *testing.T) *environment {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e scenarios need the control plane; skipped with -short")
	}
	envOnce.Do(func() { shared, envErr = setup() })
	if envErr != nil {
		t.Fatalf("e2e environment (run `make testbin` first): %v", envErr)
	}
	return shared
}

func setup() (*environment, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	dir, err := os.MkdirTemp("", "deltaeds-e2e-")
	if err != nil {
		return nil, fmt.Errorf("creating the e2e folder: %w", err)
	}
	var (
		bin      string
		buildErr error
		built    = make(chan struct{})
	)
	go func() {
		defer close(built)
		bin, buildErr = harness.BuildDeltaeds(ctx, dir)
	}()
	cp, err := controlplane.Start(ctx, controlplane.Options{
		ControllerManager: true,
		ExtraControllers:  []string{"garbagecollector"},
		Dir:               dir,
	})
	<-built
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if buildErr != nil {
		_ = cp.Stop()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("building deltaeds: %w", buildErr)
	}
	cluster := harness.NewCluster(cp)
	if err := cluster.AddNodes(ctx, zones, 2); err != nil {
		_ = cp.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "e2e: control plane up and deltaeds built in %s\n", time.Since(start).Round(100*time.Millisecond))
	return &environment{cp: cp, cluster: cluster, bin: bin, dir: dir}, nil
}

// scenario prepares one scenario: the shared environment, a goroutine-leak check when the test
// ends, and its own namespace.
func scenario(t *testing.T, ns string) *environment {
	t.Helper()
	e := env(t)
	checkLeaks(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("%s took %s", t.Name(), time.Since(start).Round(100*time.Millisecond)) })
	if _, err := e.cp.CreateNamespace(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkLeaks fails the test if goroutines started during it survive its cleanups. Registered
// first, its cleanup runs last.
func checkLeaks(t *testing.T) {
	opts := append(leakOptions(), goleak.IgnoreCurrent(),
		// The shared control plane waits for the kube-apiserver a scenario restarts after an
		// outage until the run ends. (Every child is gone by the run's own check.)
		goleak.IgnoreAnyFunction("github.com/deltaeds/deltaeds/internal/supervisor.(*Process).Start.func1"))
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure matters more, and a failed test may leave waits behind
		}
		if err := goleak.Find(opts...); err != nil {
			t.Errorf("goroutines leaked by the scenario: %v", err)
		}
	})
}

// deltaeds starts a deltaeds process for the test and stops it (SIGTERM, which must end it with
// status 0) when the test ends, printing the end of its log if the test failed.
func (e *environment) deltaeds(t *testing.T, opts harness.DeltaedsOptions) *harness.Deltaeds {
	t.Helper()
	opts.Binary = e.bin
	opts.Kubeconfig = e.cp.KubeconfigPath()
	if opts.LogDir == "" {
		opts.LogDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = logger(t)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	p, err := harness.StartDeltaeds(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s log (last 80 lines) ---\n%s", p.Name(), p.LogTail(80))
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stopping %s: %v", p.Name(), err)
		}
	})
	return p
}

// fleet starts clients that the test closes when it ends, failing it if any client saw a
// protocol violation.
func (e *environment) fleet(t *testing.T, opts envoyfleet.Options) *envoyfleet.Fleet {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = logger(t)
	}
	if opts.Zones == nil {
		opts.Zones = zones
	}
	f, err := envoyfleet.Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		for _, v := range f.Violations() {
			t.Errorf("protocol violation (%s): %s", opts.NodePrefix, v)
		}
	})
	return f
}

// logger logs to the test at info level (shown on failure or with -v).
func logger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

// waitCtx returns a context for one wait.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitAll fails the test unless pred holds for every client of f before waitTimeout.
func waitAll(t *testing.T, what string, f *envoyfleet.Fleet, pred func(envoysim.State) bool) {
	t.Helper()
	if err := f.WaitAll(waitCtx(t), pred); err != nil {
		t.Fatalf("waiting for %s: %v\n%s", what, err, describeFleet(f))
	}
}

// describeFleet renders what each client routes to, for failure messages, noting where its xDS
// state differs (a name removed, or a version from a rejected response routed with).
func describeFleet(f *envoyfleet.Fleet) string {
	var b strings.Builder
	for i, c := range f.Clients {
		st := c.Stats()
		fmt.Fprintf(&b, "client %d (streams %d, requests %d, responses %d):", i, st.Streams, st.Requests, st.Responses)
		routes, held := c.Routes(), c.HeldAll()
		for _, name := range slices.Sorted(maps.Keys(routes)) {
			r := routes[name]
			fmt.Fprintf(&b, "\n  %s@%s %s", name, short(r.Version), harness.Summary(r.CLA))
			switch h, ok := held[name]; {
			case !ok:
				b.WriteString(" (not held)")
			case h.Version != r.Version:
				fmt.Fprintf(&b, " (held @%s)", short(h.Version))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func short(v string) string {
	if len(v) > 10 {
		return v[:10]
	}
	return v
}

// holds is a predicate: the client routes name to exactly ips0 usable at priority 0 and ips1 at
// priority 1, and nothing else. It asks where the client sends traffic, so it reads the Route
// view: an EDS removal leaves Envoy's endpoints in place, only a CLA can change them.
func holds(name string, ips0, ips1 []string) func(envoysim.State) bool {
	ips0, ips1 = harness.SortIPs(append([]string(nil), ips0...)), harness.SortIPs(append([]string(nil), ips1...))
	return func(s envoysim.State) bool {
		r, ok := s.Route(name)
		if !ok {
			return false
		}
		return len(harness.Endpoints(r.CLA)) == len(ips0)+len(ips1) &&
			harness.SameIPs(harness.IPsAt(r.CLA, 0), ips0) && harness.SameIPs(harness.IPsAt(r.CLA, 1), ips1)
	}
}

// routesNothing is a predicate: the client has a route for name and it has no endpoint at all,
// which only a CLA without endpoints gives. deltaeds answers that way for a name subscribed by
// name that has no resource (a Service deleted or never created, a port dropped): Envoy ignores
// EDS removals, so a removal would leave it routing to the last endpoints it had.
func routesNothing(name string) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		r, ok := s.Route(name)
		return ok && len(harness.Endpoints(r.CLA)) == 0
	}
}

// holdsAll combines predicates.
func holdsAll(preds ...func(envoysim.State) bool) func(envoysim.State) bool {
	return func(s envoysim.State) bool {
		for _, p := range preds {
			if !p(s) {
				return false
			}
		}
		return true
	}
}

// ipsOf returns the pods' IPs.
func ipsOf(pods []harness.Pod) []string {
	var ips []string
	for _, p := range pods {
		ips = append(ips, p.IP)
	}
	return harness.SortIPs(ips)
}

// Ports used by most scenarios: a Service port named http (80 -> 8080) and one named metrics
// (9090 -> 9091), so port numbers differ between the Service and the endpoints.
var (
	httpPort       = harness.ServicePort{Name: "http", Port: 80, TargetPort: 8080}
	metricsPort    = harness.ServicePort{Name: "metrics", Port: 9090, TargetPort: 9091}
	containerPorts = []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: 9091, Protocol: corev1.ProtocolTCP},
	}
)

// service deploys replicas ready pods and a Service selecting them with ports.
func (e *environment) service(t *testing.T, ns, name string, replicas int, ports ...harness.ServicePort) *harness.Deployment {
	t.Helper()
	if len(ports) == 0 {
		ports = []harness.ServicePort{httpPort}
	}
	d, err := e.cluster.Deploy(t.Context(), harness.DeploymentSpec{Namespace: ns, Name: name, Replicas: replicas, Ports: containerPorts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cluster.CreateService(t.Context(), ns, name, d.Labels(), ports); err != nil {
		t.Fatal(err)
	}
	return d
}

// metrics scrapes deltaeds' /metrics or fails the test.
func metrics(t *testing.T, p *harness.Deltaeds) scrape.Metrics {
	t.Helper()
	m, err := p.Metrics(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// applied is one resource update or removal a client applied.
type applied struct {
	client    int
	name      string
	removed   bool
	version   string
	endpoints int
	at        time.Time
}

// recorder keeps every update and removal the clients of a fleet apply, in order per client;
// pass its onApply as envoyfleet.Options.OnApply; envoysim calls it before a
// WaitFor sees the response, so a test that waited for a response finds it recorded.
type recorder struct {
	mu     sync.Mutex
	events []applied
}

func (r *recorder) onApply(i int, c *envoysim.Client, a envoysim.Applied) {
	var evs []applied
	for _, u := range a.Updated {
		// OnApply runs on the receive goroutine right after the response was applied: the
		// route is the CLA just received, and its endpoints are what the client now sends to.
		r, _ := c.Route(u.Name)
		evs = append(evs, applied{client: i, name: u.Name, version: u.Version, endpoints: len(harness.Endpoints(r.CLA)), at: a.ReceivedAt})
	}
	for _, n := range a.Removed {
		evs = append(evs, applied{client: i, name: n, removed: true, at: a.ReceivedAt})
	}
	r.mu.Lock()
	r.events = append(r.events, evs...)
	r.mu.Unlock()
}

// mark returns a position to pass to since.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// since returns the events of client (all clients if < 0) about name ("" for any) recorded
// after mark.
func (r *recorder) since(mark, client int, name string) []applied {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []applied
	for _, ev := range r.events[mark:] {
		if (client < 0 || ev.client == client) && (name == "" || ev.name == name) {
			out = append(out, ev)
		}
	}
	return out
}

// waitReadyEndpoints waits until the EndpointSlices of namespace ns list exactly ips as ready
// endpoints: the controller has caught up.
func waitReadyEndpoints(t *testing.T, e *environment, ns string, ips []string) {
	t.Helper()
	waitReadyEndpointsOf(t, e, ns, "", ips)
}

// waitReadyEndpointsOf is waitReadyEndpoints for the slices of Service svc only ("": every
// slice of the namespace).
func waitReadyEndpointsOf(t *testing.T, e *environment, ns, svc string, ips []string) {
	t.Helper()
	var opts metav1.ListOptions
	if svc != "" {
		opts.LabelSelector = discoveryv1.LabelServiceName + "=" + svc
	}
	want := harness.SortIPs(append([]string(nil), ips...))
	var got []string
	err := harness.Eventually(waitCtx(t), func() error {
		l, err := e.cp.Client().DiscoveryV1().EndpointSlices(ns).List(t.Context(), opts)
		if err != nil {
			return err
		}
		got = got[:0]
		for _, s := range l.Items {
			for _, ep := range s.Endpoints {
				if (ep.Conditions.Ready == nil || *ep.Conditions.Ready) && len(ep.Addresses) > 0 {
					got = append(got, ep.Addresses[0])
				}
			}
		}
		if !harness.SameIPs(harness.SortIPs(got), want) {
			return fmt.Errorf("ready endpoints %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the EndpointSlice controller (ns %s, service %q): %v", ns, svc, err)
	}
}
