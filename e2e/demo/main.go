package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// config is the command line.
type config struct {
	services, pods, clients int
	zones                   int
	surge                   int // percent
	drain                   time.Duration
	deltaeds                string
	hold                    bool
	logs                    string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.services, "services", 50, "Services in the sample workload")
	flag.IntVar(&cfg.pods, "pods", 20, "pods per Service")
	flag.IntVar(&cfg.clients, "envoys", 20, "simulated Envoys, each subscribed to every Service")
	flag.IntVar(&cfg.zones, "zones", 3, "zones (two nodes each)")
	flag.IntVar(&cfg.surge, "max-surge", 25, "rolling restart maxSurge, percent of the pods (maxUnavailable is 0)")
	flag.DurationVar(&cfg.drain, "drain", time.Second, "how long a replaced pod stays terminating before it goes")
	flag.StringVar(&cfg.deltaeds, "deltaeds", "", "deltaeds binary (default: build it from this checkout)")
	flag.BoolVar(&cfg.hold, "hold", false, "after the summary, keep everything running until Ctrl-C (to point a real Envoy at it)")
	flag.StringVar(&cfg.logs, "logs", "", "keep the logs of every process in this folder (default: a temporary folder, removed at exit)")
	flag.Parse()
	if cfg.services < 1 || cfg.pods < 1 || cfg.clients < 1 || cfg.zones < 1 || cfg.surge < 1 {
		fmt.Fprintln(os.Stderr, "demo: -services, -pods, -envoys, -zones and -max-surge must be at least 1")
		os.Exit(2)
	}

	// The first Ctrl-C cancels ctx and everything winds down in order; a second one ends the
	// process at once, and its children die with it (parent-death signal).
	dir, err := os.MkdirTemp("", "deltaeds-demo-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: creating a temporary folder: %v\n", err)
		os.Exit(1)
	}
	d := &demo{cfg: cfg, out: os.Stdout, tty: isTerminal(os.Stdout), dir: dir}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintf(os.Stderr, "\ninterrupted twice: exiting now; the children die with this process, %s may be left behind\n", d.dir)
		os.Exit(130)
	}()
	stop := func() { signal.Stop(sigs) }
	err = d.run(ctx)
	interrupted := ctx.Err() != nil
	cleanErr := d.cleanup(interrupted)
	stop()
	switch {
	case interrupted:
		fmt.Fprintln(d.out, "\ninterrupted: "+d.cleanupReport(cleanErr))
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
		fmt.Fprintln(d.out, d.cleanupReport(cleanErr))
		os.Exit(1)
	case cleanErr != nil:
		fmt.Fprintln(d.out, d.cleanupReport(cleanErr))
		os.Exit(1)
	}
	fmt.Fprintln(d.out, d.cleanupReport(nil))
}

// demo holds what run starts, for cleanup.
type demo struct {
	cfg config
	out io.Writer
	tty bool
	log *zap.Logger

	dir     string // temporary folder
	logDir  string
	cp      *controlplane.ControlPlane
	deltaed *harness.Deltaeds
	fleet   *envoyfleet.Fleet
	logFile *os.File
	stopped []string // what cleanup stopped, for the report
}

const namespace = "demo"

// containerPorts are the sample pods' ports; each Service maps port http (80) to 8080.
var containerPorts = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}

func serviceName(i int) string { return fmt.Sprintf("svc-%02d", i) }

func clusterName(svc string) string { return namespace + "/" + svc + "/http" }

func (d *demo) run(ctx context.Context) error {
	c := d.cfg
	total := c.services * c.pods
	fmt.Fprintf(d.out, "deltaeds demo: %d Services x %d pods (%d pods) over %d zones, %d simulated Envoys\n\n",
		c.services, c.pods, total, c.zones, c.clients)

	var err error
	d.logDir = c.logs
	if d.logDir == "" {
		d.logDir = filepath.Join(d.dir, "logs")
	}
	if err := os.MkdirAll(d.logDir, 0o755); err != nil {
		return fmt.Errorf("creating the log folder: %w", err)
	}
	if d.logFile, err = os.Create(filepath.Join(d.logDir, "demo.log")); err != nil {
		return fmt.Errorf("creating the demo log: %w", err)
	}
	d.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(d.logFile), zap.InfoLevel))
	// client-go logs through klog (throttling notices, retries): into the log file, not over
	// the progress line.
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("logtostderr", "false")
	_ = klogFlags.Set("alsologtostderr", "false")
	klog.SetOutput(d.logFile)

	// 1. The binary and the control plane.
	bin := c.deltaeds
	what := "starting etcd, kube-apiserver and kube-controller-manager (EndpointSlice controllers)"
	if bin == "" {
		what += ", building deltaeds meanwhile"
	}
	if err := d.step(what, func() (string, error) {
		var buildErr error
		built := make(chan struct{})
		if bin == "" {
			go func() {
				defer close(built)
				bin, buildErr = harness.BuildDeltaeds(ctx, d.dir)
			}()
		} else {
			close(built)
		}
		cp, err := controlplane.Start(ctx, controlplane.Options{ControllerManager: true, Dir: d.dir})
		<-built
		d.cp = cp
		if err != nil {
			return "", err
		}
		if buildErr != nil {
			return "", buildErr
		}
		return "API server " + cp.APIServerURL(), nil
	}); err != nil {
		return err
	}

	// 2. The workload.
	cluster := harness.NewCluster(d.cp)
	var zones []string
	for i := range c.zones {
		zones = append(zones, fmt.Sprintf("zone-%c", 'a'+i))
	}
	deps := make([]*harness.Deployment, c.services)
	if err := d.step(fmt.Sprintf("creating %d nodes, %d Services and %d pods (the EndpointSlice controller slices them)", 2*c.zones, c.services, total), func() (string, error) {
		if _, err := d.cp.CreateNamespace(ctx, namespace); err != nil {
			return "", err
		}
		if err := cluster.AddNodes(ctx, zones, 2); err != nil {
			return "", err
		}
		var made atomic.Int64
		stopProgress := d.progress(func() string {
			return fmt.Sprintf("%d/%d Services with ready pods", made.Load(), c.services)
		})
		defer stopProgress()
		return "", harness.Parallel(ctx, 4, c.services+1, func(ctx context.Context, i int) error {
			name, replicas := "canary", 1
			if i < c.services {
				name, replicas = serviceName(i), c.pods
			}
			dep, err := cluster.Deploy(ctx, harness.DeploymentSpec{Namespace: namespace, Name: name, Replicas: replicas, Ports: containerPorts, Parallel: 4})
			if err != nil {
				return err
			}
			if _, err := cluster.CreateService(ctx, namespace, name, dep.Labels(), []harness.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}); err != nil {
				return err
			}
			if i < c.services {
				deps[i] = dep
				made.Add(1)
			}
			return nil
		})
	}); err != nil {
		return err
	}

	// 3. deltaeds.
	if err := d.step("starting deltaeds", func() (string, error) {
		p, err := harness.StartDeltaeds(ctx, harness.DeltaedsOptions{
			Name: "deltaeds", Binary: bin, Kubeconfig: d.cp.KubeconfigPath(), LogDir: d.logDir,
			OwnProcessGroup: true, Logger: d.log,
		})
		if err != nil {
			return "", err
		}
		d.deltaed = p
		return fmt.Sprintf("xDS on %s, admin on %s", p.XDSAddress(), p.AdminURL()), nil
	}); err != nil {
		return err
	}

	// 4. The fleet. Every applied response is checked (no Service ever without a usable
	// endpoint to route to) and fed to the latency tracker. The fleet uses envoysim's default,
	// Envoy's, reconnect backoff.
	tracker := harness.NewTracker(c.clients, clusterName)
	var emptyMoments atomic.Int64
	var names []string
	for i := range c.services {
		names = append(names, clusterName(serviceName(i)))
	}
	if err := d.step(fmt.Sprintf("attaching %d simulated Envoys, each subscribing to %d clusters", c.clients, c.services), func() (string, error) {
		f, err := envoyfleet.Start(ctx, envoyfleet.Options{
			Size: c.clients, Target: d.deltaed.XDSAddress(), NodePrefix: "envoy", Zones: zones, Logger: d.log,
			OnApply: func(i int, cl *envoysim.Client, a envoysim.Applied) {
				for _, u := range a.Updated {
					// What the Envoy routes to right after applying the response.
					r, _ := cl.Route(u.Name)
					tracker.Applied(i, u.Name, r.CLA, a.ReceivedAt)
					if harness.Usable(r.CLA) == 0 && u.Name != clusterName("canary") {
						emptyMoments.Add(1)
					}
				}
			},
		})
		if err != nil {
			return "", err
		}
		d.fleet = f
		f.Subscribe(names...)
		err = f.WaitAll(ctx, func(s envoysim.State) bool {
			for i, n := range names {
				r, ok := s.Route(n)
				if !ok || !harness.SameIPs(harness.IPsAt(r.CLA, 0), deps[i].IPs()) {
					return false
				}
			}
			return true
		})
		return fmt.Sprintf("%d/%d Envoys hold all %d CLAs", c.clients, c.clients, c.services), err
	}); err != nil {
		return err
	}

	// 5. The rolling restart, every Service at once as a cluster-wide rollout would.
	surge := max(1, c.pods*c.surge/100)
	var replaced atomic.Int64
	observe := func(ev harness.Event) {
		if ev.Kind == harness.PodTerminating {
			replaced.Add(1)
		}
		tracker.Observe(ev)
	}
	// An EndpointSlice watcher of our own splits the latency into the controller's part and
	// deltaeds'.
	sw, err := harness.WatchSlices(d.cp.Client(), namespace, tracker.SlicesChanged)
	if err != nil {
		return err
	}
	defer sw.Stop()
	rolloutStats := d.fleet.Stats()
	var rollTime time.Duration
	if err := d.step(fmt.Sprintf("rolling restart of all %d Services (maxSurge %d%% = %d pods, maxUnavailable 0, drain %s)", c.services, c.surge, surge, c.drain), func() (string, error) {
		stopProgress := d.progress(func() string {
			lat := tracker.Stats()
			st := d.fleet.Stats()
			return fmt.Sprintf("%d/%d pods replaced | %d responses, %s to the fleet | pod->Envoy p50 %s p99 %s (deltaeds' part p50 %s) | in flight %d",
				replaced.Load(), total, st.Responses-rolloutStats.Responses, bytesString(st.Bytes-rolloutStats.Bytes),
				ms(lat.P50), ms(lat.P99), ms(lat.ServerP50), lat.Outstanding)
		})
		defer stopProgress()
		start := time.Now()
		err := harness.Parallel(ctx, c.services, c.services, func(ctx context.Context, i int) error {
			return deps[i].RollingRestart(ctx, harness.RolloutOptions{MaxSurge: surge, MaxUnavailable: 0, DrainFor: c.drain, Observe: observe, Made: tracker.Made})
		})
		if err != nil {
			return "", err
		}
		err = d.fleet.WaitAll(ctx, func(s envoysim.State) bool {
			for i, n := range names {
				r, ok := s.Route(n)
				if !ok || !harness.SameIPs(harness.IPsAt(r.CLA, 0), deps[i].IPs()) || len(harness.Endpoints(r.CLA)) != c.pods {
					return false
				}
			}
			return true
		})
		rollTime = time.Since(start)
		return fmt.Sprintf("every Envoy holds exactly the %d new pods", total), err
	}); err != nil {
		return err
	}
	afterRollout := d.fleet.Stats()
	lat := tracker.Stats()
	// deltaeds' own view of the rollout, before the restart below resets its counters.
	m, _ := d.deltaed.Metrics(ctx)
	rss, _ := d.deltaed.RSS()

	// 6. Restart deltaeds: Envoys reconnect presenting what they hold and are resent nothing.
	// Once they hold a canary subscribed after the restart, anything resent has arrived. Both
	// are about what the server said, so they read the xDS state (Held): "held" counts the
	// versions the Envoys declare in initial_resource_versions.
	var resent, held uint64
	if err := d.step("restarting deltaeds; the Envoys reconnect with initial_resource_versions", func() (string, error) {
		before := d.fleet.Stats()
		for _, cl := range d.fleet.Clients {
			held += uint64(len(cl.HeldAll()))
		}
		if err := d.deltaed.Restart(ctx); err != nil {
			return "", err
		}
		canary := clusterName("canary")
		d.fleet.Subscribe(canary)
		if err := d.fleet.WaitAll(ctx, func(s envoysim.State) bool { _, ok := s.Held(canary); return ok }); err != nil {
			return "", err
		}
		after := d.fleet.Stats()
		resent = after.Resources - before.Resources - uint64(c.clients)
		return fmt.Sprintf("%d Envoys reconnected", c.clients), nil
	}); err != nil {
		return err
	}

	// 7. The summary.
	final := d.fleet.Stats()
	fmt.Fprintf(d.out, "\nSummary (rolling restart of %d pods in %s)\n", total, rollTime.Round(100*time.Millisecond))
	rows := [][2]string{
		{"propagation latency, pod change -> Envoy holds the CLA", fmt.Sprintf("p50 %s   p99 %s   max %s   (%d samples)", ms(lat.P50), ms(lat.P99), ms(lat.Max), lat.Count)},
		{"  of which pod change -> EndpointSlice (controller)", fmt.Sprintf("p50 %s   p99 %s", ms(lat.ControllerP50), ms(lat.ControllerP99))},
		{"  of which EndpointSlice -> Envoy (deltaeds)", fmt.Sprintf("p50 %s   p99 %s", ms(lat.ServerP50), ms(lat.ServerP99))},
		{"responses to the fleet during the rollout", fmt.Sprintf("%d (%.1f per Envoy per Service)", afterRollout.Responses-rolloutStats.Responses,
			float64(afterRollout.Responses-rolloutStats.Responses)/float64(c.clients*c.services))},
		{"bytes to the fleet during the rollout", bytesString(afterRollout.Bytes - rolloutStats.Bytes)},
		{"CLAs delivered during the rollout", fmt.Sprint(afterRollout.Resources - rolloutStats.Resources)},
		{"resources resent on reconnect (deltaeds restart)", fmt.Sprintf("%d of %d held", resent, held)},
		{"moments an Envoy held a Service with no usable endpoint", fmt.Sprint(emptyMoments.Load())},
		{"NACKs / protocol violations", fmt.Sprintf("%d / %d", final.NACKs, len(final.Violations))},
	}
	if m != nil {
		rows = append(rows,
			[2]string{"deltaeds: slice event -> response sent (its histogram)", fmt.Sprintf("p50 %s   p99 %s", secs(m.Quantile("deltaeds_propagation_send_seconds", 0.5)), secs(m.Quantile("deltaeds_propagation_send_seconds", 0.99)))},
			[2]string{"deltaeds: resident memory after the rollout", bytesString(uint64(rss))})
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	fmt.Fprintf(d.out, "  %s\n", strings.Repeat("-", width+50))
	for _, r := range rows {
		fmt.Fprintf(d.out, "  %-*s  %s\n", width, r[0], r[1])
	}
	fmt.Fprintf(d.out, "  %s\n", strings.Repeat("-", width+50))

	// 8. A real Envoy.
	bootstrap := filepath.Join(d.dir, "envoy.yaml")
	args := []string{"bootstrap", "--xds-server", d.deltaed.XDSAddress(), "--cluster", clusterName(serviceName(0)), "--cluster", clusterName(serviceName(1)), "--node-zone", zones[0]}
	out, err := exec.CommandContext(ctx, bin, append(args, "-o", bootstrap)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("deltaeds bootstrap: %w: %s", err, out)
	}
	fmt.Fprintf(d.out, "\nPoint a real Envoy at deltaeds (one EDS cluster per Service port, Delta ADS):\n\n")
	fmt.Fprintf(d.out, "  bin/deltaeds %s > envoy.yaml\n  envoy -c envoy.yaml --service-node my-envoy\n\n", strings.Join(args, " "))
	if !c.hold {
		fmt.Fprintf(d.out, "Everything stops now; run `make demo DEMO_FLAGS=-hold` to keep deltaeds (%s) and the cluster up for that.\n", d.deltaed.XDSAddress())
		return nil
	}
	fmt.Fprintf(d.out, "Holding: deltaeds serves on %s, kubeconfig %s. Ctrl-C stops everything.\n", d.deltaed.XDSAddress(), d.cp.KubeconfigPath())
	<-ctx.Done()
	return nil
}

// cleanup stops, in order, the fleet, deltaeds and the control plane, removes the temporary
// folder and checks that no child process is left. After a Ctrl-C the control plane's children
// got the terminal's SIGINT too, so their having exited is expected then, not an error.
func (d *demo) cleanup(interrupted bool) error {
	var errs []error
	if d.fleet != nil {
		d.fleet.Close()
		d.stopped = append(d.stopped, fmt.Sprintf("%d Envoys", len(d.fleet.Clients)))
	}
	if d.deltaed != nil {
		if err := d.deltaed.Stop(); err != nil {
			errs = append(errs, err)
		} else {
			d.stopped = append(d.stopped, "deltaeds (SIGTERM, exit 0)")
		}
	}
	if d.cp != nil {
		if err := d.cp.Stop(); err != nil && !interrupted {
			errs = append(errs, err)
		}
		d.stopped = append(d.stopped, "kube-controller-manager, kube-apiserver, etcd")
	}
	if d.logFile != nil {
		_ = d.log.Sync()
		d.logFile.Close()
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", d.dir, err))
		}
	}
	kids, err := supervisor.Children()
	if err != nil {
		errs = append(errs, err)
	}
	for _, k := range kids {
		errs = append(errs, fmt.Errorf("child process left: %s", k))
	}
	return errors.Join(errs...)
}

func (d *demo) cleanupReport(err error) string {
	what := "nothing was started"
	if len(d.stopped) > 0 {
		what = "stopped " + strings.Join(d.stopped, ", ")
	}
	if err != nil {
		return fmt.Sprintf("%s; problems while stopping: %v", what, err)
	}
	return what + "; no process left behind."
}

// step prints a numbered step, runs it and prints how it went.
func (d *demo) step(what string, fn func() (string, error)) error {
	fmt.Fprintf(d.out, "==> %s\n", what)
	start := time.Now()
	detail, err := fn()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if detail != "" {
		detail += ", "
	}
	fmt.Fprintf(d.out, "    done: %s%s\n", detail, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// progress redraws line() in place every 250 ms on a terminal (every 5 s otherwise) until the
// returned function is called, which prints the final state.
func (d *demo) progress(line func() string) func() {
	every := 5 * time.Second
	if d.tty {
		every = 250 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				d.printProgress(line())
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		d.printProgress(line())
		if d.tty {
			fmt.Fprintln(d.out)
		}
	}
}

func (d *demo) printProgress(s string) {
	if d.tty {
		fmt.Fprintf(d.out, "\r\033[K    %s", s)
		return
	}
	fmt.Fprintf(d.out, "    %s\n", s)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func secs(s float64) string {
	if s != s { // NaN: no samples
		return "n/a"
	}
	return ms(time.Duration(s * float64(time.Second)))
}

func bytesString(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
