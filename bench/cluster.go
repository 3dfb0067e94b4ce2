package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/procfs"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// ClusterResult is what the cluster workload measured.
type ClusterResult struct {
	Slices    int `json:"slices"`
	Endpoints int `json:"endpoints"`
	Services  int `json:"services"`
	// CreateSeconds is how long creating every slice took (Creators at once).
	CreateSeconds float64 `json:"create_seconds"`
	Creators      int     `json:"creators"`
	// SyncSeconds is from starting deltaeds until its /readyz answered:
	// every slice listed and translated, the store marked synced.
	SyncSeconds    float64 `json:"sync_seconds"`
	SyncCPUSeconds float64 `json:"sync_cpu_seconds"`
	// At rest: RestSeconds after ready, with nothing changing.
	RestSeconds  float64 `json:"rest_seconds"`
	RSSBytes     uint64  `json:"rss_bytes"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	// HeapInuseBytes is the Go heap in use at rest (go_memstats_heap_inuse_bytes).
	HeapInuseBytes uint64 `json:"heap_inuse_bytes"`
	// BaselineRSSBytes is the same binary's RSS at rest against an empty
	// cluster: what deltaeds costs before any slice.
	BaselineRSSBytes uint64 `json:"baseline_rss_bytes"`
	// The API server's and etcd's resident memory at the same moment.
	APIServerRSSBytes     uint64 `json:"apiserver_rss_bytes"`
	APIServerPeakRSSBytes uint64 `json:"apiserver_peak_rss_bytes"`
	EtcdRSSBytes          uint64 `json:"etcd_rss_bytes"`
}

// PerEndpoint is deltaeds' resident memory at rest per endpoint.
func (c *ClusterResult) PerEndpoint() float64 {
	if c.Endpoints == 0 {
		return 0
	}
	return float64(c.RSSBytes) / float64(c.Endpoints)
}

// PerEndpointAboveEmpty is the same above the binary's RSS on an empty
// cluster.
func (c *ClusterResult) PerEndpointAboveEmpty() float64 {
	if c.Endpoints == 0 {
		return 0
	}
	return (float64(c.RSSBytes) - float64(c.BaselineRSSBytes)) / float64(c.Endpoints)
}

// clusterNamespace holds every slice of the cluster workload.
const clusterNamespace = "bench"

// clusterCreators is how many creates are in flight at once.
const clusterCreators = 64

// clusterRest is how long deltaeds is left alone after ready before its
// memory is read.
const clusterRest = 5 * time.Second

// runCluster starts a real etcd and kube-apiserver, creates the workload's
// EndpointSlices directly (no controller), then starts the deltaeds binary
// and measures its time to first full sync and its memory at rest, with
// the API server's own memory alongside.
func (r *runner) runCluster(ctx context.Context) (Result, error) {
	var res Result
	w := r.w
	cr := &ClusterResult{Slices: w.Slices, Endpoints: w.Slices * w.Endpoints, Services: (w.Slices + w.SlicesPerService - 1) / w.SlicesPerService, Creators: clusterCreators}
	res.Cluster = cr
	dir, err := os.MkdirTemp("", "edsbench-cluster-")
	if err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	defer os.RemoveAll(dir)

	bin := r.cfg.DeltaedsBinary
	if bin == "" {
		if bin, err = harness.BuildDeltaeds(ctx, dir); err != nil {
			return res, fmt.Errorf("cluster: %w", err)
		}
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, StartTimeout: 2 * time.Minute})
	if err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	defer cp.Stop()
	if _, err := cp.CreateNamespace(ctx, clusterNamespace); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}

	// The same binary against the empty cluster first: its baseline.
	start := func(name string) (*harness.Deltaeds, time.Duration, error) {
		t0 := time.Now()
		p, err := harness.StartDeltaeds(ctx, harness.DeltaedsOptions{Name: name, Binary: bin, Kubeconfig: cp.KubeconfigPath(),
			LogDir: dir, LogLevel: "warn", ReadyTimeout: r.cfg.SyncTimeout})
		return p, time.Since(t0), err
	}
	base, _, err := start("deltaeds-empty")
	if err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	if err := sleepCtx(ctx, clusterRest); err != nil {
		_ = base.Stop()
		return res, err
	}
	rss, _, merr := supervisor.Memory(base.Pid())
	if err := base.Stop(); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	if merr != nil {
		return res, fmt.Errorf("cluster: %w", merr)
	}
	cr.BaselineRSSBytes = rss

	cfg := cp.RESTConfig()
	cfg.QPS = -1 // no client-side rate limit: the API server is what is measured
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, fmt.Errorf("cluster: client: %w", err)
	}
	t0 := time.Now()
	if err := createSlices(ctx, cs, w, r.cfg.Log); err != nil {
		return res, err
	}
	cr.CreateSeconds = time.Since(t0).Seconds()
	fmt.Fprintf(r.cfg.Log, "bench: cluster: created %d EndpointSlices in %.1fs\n", w.Slices, cr.CreateSeconds)

	p, took, err := start("deltaeds")
	if err != nil {
		return res, fmt.Errorf("cluster: first sync: %w", err)
	}
	defer p.Stop()
	cr.SyncSeconds = took.Seconds()
	res.SyncSeconds = cr.SyncSeconds
	cr.SyncCPUSeconds = procCPU(p.Pid())
	if err := sleepCtx(ctx, clusterRest); err != nil {
		return res, err
	}
	cr.RestSeconds = clusterRest.Seconds()
	if cr.RSSBytes, cr.PeakRSSBytes, err = supervisor.Memory(p.Pid()); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	res.PeakRSSBytes = cr.PeakRSSBytes
	m, err := p.Metrics(ctx)
	if err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	cr.HeapInuseBytes = uint64(m.Value("go_memstats_heap_inuse_bytes"))
	if path := r.profilePath(".heap.pprof"); path != "" {
		// What deltaeds holds at rest, by allocation site (after a GC).
		code, body, err := p.Get(ctx, "/debug/pprof/heap?gc=1")
		if err != nil {
			return res, fmt.Errorf("cluster: heap profile: %w", err)
		}
		if code != http.StatusOK {
			return res, fmt.Errorf("cluster: heap profile: /debug/pprof/heap answered %d", code)
		}
		if err := os.WriteFile(path, body, 0o644); err != nil {
			return res, fmt.Errorf("cluster: heap profile: %w", err)
		}
	}
	apiPid, etcdPid := cp.Pids()
	if cr.APIServerRSSBytes, cr.APIServerPeakRSSBytes, err = supervisor.Memory(apiPid); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	if cr.EtcdRSSBytes, _, err = supervisor.Memory(etcdPid); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	// deltaeds must serve what it read: the CLA count its store holds.
	if got := m.Value("deltaeds_store_resources", "type_url", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"); !m.Has("deltaeds_store_resources") || int(got) != cr.Services {
		return res, fmt.Errorf("cluster: deltaeds holds %v CLAs, want %d", got, cr.Services)
	}
	if err := p.Stop(); err != nil {
		return res, fmt.Errorf("cluster: %w", err)
	}
	return res, nil
}

// createSlices creates the workload's slices with clusterCreators creates
// in flight, retrying a create the API server answered with a transient error.
func createSlices(ctx context.Context, cs kubernetes.Interface, w Workload, log io.Writer) error {
	api := cs.DiscoveryV1().EndpointSlices(clusterNamespace)
	var next atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	t0 := time.Now()
	for range clusterCreators {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= w.Slices || ctx.Err() != nil {
					return
				}
				s := clusterSlice(i, w)
				err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 8}, func(ctx context.Context) (bool, error) {
					_, err := api.Create(ctx, s, metav1.CreateOptions{})
					// AlreadyExists: an earlier attempt went through after all.
					return err == nil || apierrors.IsAlreadyExists(err), nil
				})
				if err != nil {
					once.Do(func() { first = fmt.Errorf("cluster: creating slice %s: %w", s.Name, err); cancel() })
					return
				}
				if (i+1)%20000 == 0 {
					fmt.Fprintf(log, "bench: cluster: %d slices created (%.0f/s)\n", i+1, float64(i+1)/time.Since(t0).Seconds())
				}
			}
		})
	}
	wg.Wait()
	return first
}

// clusterSlice is slice i: as the EndpointSlice controller writes them, with
// ready endpoints that name their pod, node and zone.
func clusterSlice(i int, w Workload) *discoveryv1.EndpointSlice {
	svc := fmt.Sprintf("svc-%05d", i/w.SlicesPerService)
	name := fmt.Sprintf("%s-%d", svc, i%w.SlicesPerService)
	ready, serving, terminating := true, true, false
	port, proto, portName := int32(8080), corev1.ProtocolTCP, "http"
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: clusterNamespace, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "bench.deltaeds.test",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		Endpoints:   make([]discoveryv1.Endpoint, w.Endpoints),
	}
	for j := range s.Endpoints {
		n := i*w.Endpoints + j
		node := fmt.Sprintf("node-%04d", n%1000)
		zone := fmt.Sprintf("zone-%d", n%3)
		pod := fmt.Sprintf("%s-%d-%d", svc, i%w.SlicesPerService, j)
		s.Endpoints[j] = discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", (n>>16)&0xff, (n>>8)&0xff, n&0xff)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
			Zone:       &zone,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: clusterNamespace, Name: pod, UID: types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", n))},
		}
	}
	return s
}

// procCPU is a process's user plus system CPU seconds so far.
func procCPU(pid int) float64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return st.CPUTime()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func printCluster(out io.Writer, wr WorkloadReport) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tslices\tendpoints\tcreate s\tcreates/s\tfirst sync s\tsync cpu s\tRSS MB\tempty MB\tB/endpoint\tabove empty\theap MB\tpeak MB\tapiserver MB\tapiserver peak MB\tetcd MB\t")
	for _, r := range wr.Results {
		c := r.Cluster
		if r.Error != "" || c == nil {
			fmt.Fprintf(out, "   %s: FAILED: %s\n", r.Server, firstLine(r.Error))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.0f\t%.2f\t%.2f\t%s\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", r.Server, c.Slices, c.Endpoints, c.CreateSeconds,
			float64(c.Slices)/c.CreateSeconds, c.SyncSeconds, c.SyncCPUSeconds, mb(c.RSSBytes), mb(c.BaselineRSSBytes), c.PerEndpoint(), c.PerEndpointAboveEmpty(),
			mb(c.HeapInuseBytes), mb(c.PeakRSSBytes), mb(c.APIServerRSSBytes), mb(c.APIServerPeakRSSBytes), mb(c.EtcdRSSBytes))
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "   (first sync: from starting the deltaeds binary to its /readyz; RSS, heap: deltaeds %v after ready; empty: the same binary on an empty cluster;\n", clusterRest)
	fmt.Fprintln(out, "    B/endpoint: RSS at rest over endpoints, baseline included (above empty: without it); create: that many slices created directly, no controller)")
	fmt.Fprintln(out)
}

// clusterTargets: at most 2 KB of deltaeds memory per endpoint at rest, and
// the first full sync under a minute.
func clusterTargets(wr WorkloadReport) []Target {
	w, scale := wr.Workload.Name, wr.Workload.Scale
	d := wr.resultOf(control.KindDeltaEDS)
	t1 := Target{Workload: w, Scale: scale, Name: "deltaeds memory per endpoint at rest", Want: "<= 2048 B", Status: "SKIP"}
	t2 := Target{Workload: w, Scale: scale, Name: "first full sync", Want: "< 60 s", Status: "SKIP"}
	if d != nil && d.Cluster != nil {
		pe := d.Cluster.PerEndpoint()
		t1.Got, t1.Status = fmt.Sprintf("%.0f B", pe), check(pe <= 2048)
		t2.Got, t2.Status = fmt.Sprintf("%.1f s", d.Cluster.SyncSeconds), check(d.Cluster.SyncSeconds < 60)
	}
	return []Target{t1, t2}
}

// clusterPanel draws deltaeds' memory next to the API server's and etcd's.
func clusterPanel(p *plot.Plot, wr WorkloadReport) (*plot.Plot, error) {
	p.Title.Text += ": resident memory at rest"
	p.Y.Label.Text = "MB"
	d := wr.resultOf(control.KindDeltaEDS)
	if d == nil || d.Cluster == nil {
		p.Title.Text += ": no results"
		return p, nil
	}
	c := d.Cluster
	vals := plotter.Values{float64(c.RSSBytes) / 1e6, float64(c.BaselineRSSBytes) / 1e6, float64(c.APIServerRSSBytes) / 1e6, float64(c.EtcdRSSBytes) / 1e6}
	bars, err := plotter.NewBarChart(vals, vg.Points(30))
	if err != nil {
		return nil, fmt.Errorf("bars: %w", err)
	}
	bars.Color = serverColors[control.KindDeltaEDS]
	p.Add(bars)
	p.NominalX("deltaeds", "deltaeds (empty)", "kube-apiserver", "etcd")
	return p, nil
}
