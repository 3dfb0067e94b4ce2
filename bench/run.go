package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/bench/peakheap"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// Options configure Run. Only Command is required.
type Options struct {
	// Profile names the scale factors (see Profiles); default "short".
	Profile string
	// Scale, when positive, runs every workload at this scale instead.
	Scale float64
	// RateFactor, when positive, replaces the profile's rate factor.
	RateFactor float64
	// Workloads and Servers select what runs; empty means all, in the
	// standard order.
	Workloads []string
	Servers   []string
	// CurveStreams, when set, replaces the stream counts of every curve
	// workload (fleet-curve), taken as given rather than scaled: one point
	// of the full-size curve can run where the whole curve does not fit.
	CurveStreams []int
	// Seed makes the workloads' random choices; every server of one
	// workload sees the same changes.
	Seed uint64
	// ResultsDir receives <timestamp>.json and <timestamp>.png; empty
	// writes nothing.
	ResultsDir string
	// CPUProfileDir, if set, receives a CPU profile of every child over its
	// change (or reconnect) phase, <workload>-<server>.cpu.pprof, and a heap
	// profile at its exit, <workload>-<server>.heap.pprof, and one taken at
	// its largest live heap, <workload>-<server>.peak.heap.pprof; the
	// parent's own at its largest, <workload>-<server>.fleet.peak.heap.pprof.
	// A curve's points are told apart by their streams:
	// fleet-curve-1000-deltaeds.cpu.pprof.
	CPUProfileDir string
	// DeltaedsBinary is the deltaeds binary the cluster workload runs;
	// empty builds one from this module (e2e/harness.BuildDeltaeds).
	DeltaedsBinary string
	// Command starts a child; see SelfCommand.
	Command ChildCommand
	// Out receives the tables; Log the progress (and, with Verbose, the
	// children's standard error). Nil means io.Discard.
	Out, Log io.Writer
	Verbose  bool
	// SyncTimeout bounds the initial sync and a reconnect; DrainTimeout
	// bounds the wait for the last change to reach every subscriber.
	SyncTimeout, DrainTimeout time.Duration
}

// Report is everything one Run measured.
type Report struct {
	Started   time.Time        `json:"started"`
	Seconds   float64          `json:"seconds"`
	Profile   string           `json:"profile"`
	Machine   Machine          `json:"machine"`
	Workloads []WorkloadReport `json:"workloads"`
	Targets   []Target         `json:"targets"`
	// LoadAvgEnd is the 1-minute load average when the run ended.
	LoadAvgEnd float64 `json:"loadavg_1m_end"`
	// JSONPath and PNGPath are where the report was written, if it was.
	JSONPath string `json:"-"`
	PNGPath  string `json:"-"`
}

// WorkloadReport holds one workload's results, one per server.
type WorkloadReport struct {
	Workload Workload `json:"workload"`
	Results  []Result `json:"results"`
}

// Result is one server's figures on one workload.
type Result struct {
	Server string `json:"server"`
	Error  string `json:"error,omitempty"`

	// Change phase: from the first change sent until every subscriber had
	// applied the last one.
	Changes       int     `json:"changes,omitempty"`
	Delivered     int     `json:"delivered,omitempty"`
	ChangeSeconds float64 `json:"change_seconds,omitempty"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	UserSeconds   float64 `json:"user_seconds"`
	SystemSeconds float64 `json:"system_seconds"`
	// FleetCPUSeconds is the parent's own CPU over the same phase: the
	// witness shares the machine, and a saturated witness inflates latency.
	FleetCPUSeconds float64 `json:"fleet_cpu_seconds"`
	// FleetPeakLiveHeapBytes is the largest live heap of this process (the
	// witness fleet, mostly) after a GC over the run; 0 when no GC ran
	// during it (a tiny run can allocate too little to start one).
	FleetPeakLiveHeapBytes uint64       `json:"fleet_peak_live_heap_bytes"`
	CPUPer1kChanges        float64      `json:"cpu_seconds_per_1k_changes,omitempty"`
	Latency                *Percentiles `json:"latency_ms,omitempty"`
	CDF                    []CDFPoint   `json:"latency_cdf,omitempty"`
	BytesChanges           uint64       `json:"bytes_changes,omitempty"`
	ResourcesChanges       uint64       `json:"resources_changes,omitempty"`
	// ResponsesChanges counts responses over the change phase: fewer than
	// resources means changes rode together (batched behind an ACK, or
	// coalesced for a stream that was behind).
	ResponsesChanges uint64 `json:"responses_changes,omitempty"`

	// Initial sync: from starting the fleet until every client held every
	// name it wants.
	SyncSeconds    float64 `json:"sync_seconds"`
	SyncCPUSeconds float64 `json:"sync_cpu_seconds"`
	BytesSync      uint64  `json:"bytes_sync"`

	// Reconnect workload: the restarted server, from ready until every
	// client reconnected and the fleet went quiet.
	Resent           *uint64 `json:"resources_resent_on_reconnect,omitempty"`
	ReconnectSeconds float64 `json:"reconnect_seconds,omitempty"`
	ReconnectCPU     float64 `json:"reconnect_cpu_seconds,omitempty"`
	ReconnectBytes   uint64  `json:"reconnect_bytes,omitempty"`

	// Subscriptions is the number of (stream, name) pairs of the fleet.
	Subscriptions int `json:"subscriptions,omitempty"`

	// Cluster workload (see ClusterResult).
	Cluster *ClusterResult `json:"cluster,omitempty"`

	// VariantsPerChange is the per-view variants the server built per
	// change (topology workloads).
	VariantsPerChange float64 `json:"variants_built_per_change,omitempty"`

	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	// PeakLiveHeapBytes is the server's largest live heap after a GC: its
	// peak without the garbage Go lets accumulate between GCs; 0 when no GC
	// ran in the child.
	PeakLiveHeapBytes uint64   `json:"peak_live_heap_bytes"`
	Violations        int      `json:"violations"`
	ViolationSamples  []string `json:"violation_samples,omitempty"`
}

// Percentiles of change-to-all-subscribers latency, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// CDFPoint is one point of a latency distribution.
type CDFPoint struct {
	Ms       float64 `json:"ms"`
	Fraction float64 `json:"fraction"`
}

// Run runs the selected workloads against the selected servers, one child
// at a time, prints a table per workload and the targets, and writes the
// report when ResultsDir is set.
func Run(ctx context.Context, cfg Options) (*Report, error) {
	if cfg.Command == nil {
		return nil, errors.New("bench: Options.Command is required")
	}
	if cfg.Profile == "" {
		cfg.Profile = "short"
	}
	prof, ok := Profiles[cfg.Profile]
	if !ok {
		return nil, fmt.Errorf("bench: unknown profile %q (want tiny, short or full)", cfg.Profile)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 3 * time.Minute
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 3 * time.Minute
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = WorkloadNames()
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = control.Kinds
	}
	for _, k := range cfg.Servers {
		if !slices.Contains(control.Kinds, k) {
			return nil, fmt.Errorf("bench: unknown server %q (want one of %v)", k, control.Kinds)
		}
	}
	workloads, err := selectWorkloads(cfg, prof)
	if err != nil {
		return nil, err
	}
	if cfg.CPUProfileDir != "" {
		if err := os.MkdirAll(cfg.CPUProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: cpu profile dir: %w", err)
		}
	}

	rep := &Report{Started: time.Now(), Profile: cfg.Profile, Machine: ReadMachine()}
	fmt.Fprintf(cfg.Out, "%s\n\n", rep.Machine)
	var childLog io.Writer
	if cfg.Verbose {
		childLog = cfg.Log
	}
	for wi, w := range workloads {
		wr := WorkloadReport{Workload: w}
		for _, r := range runnersFor(cfg, w, cfg.Seed+uint64(wi), childLog) {
			fmt.Fprintf(cfg.Log, "bench: %s on %s (%s)\n", w.Name, r.label, w.Describe())
			var res Result
			var err error
			if w.Cluster {
				res, err = r.runCluster(ctx)
			} else {
				res, err = r.run(ctx)
			}
			res.Server = r.label
			if res.FleetPeakLiveHeapBytes > 0 {
				fmt.Fprintf(cfg.Log, "bench: %s on %s: server peak live heap %s MB, fleet (this process) %s MB\n",
					w.Name, r.label, mb(res.PeakLiveHeapBytes), mb(res.FleetPeakLiveHeapBytes))
			}
			if err != nil {
				if ctx.Err() != nil {
					return rep, fmt.Errorf("bench: %s on %s: %w", w.Name, r.label, err)
				}
				res.Error = err.Error()
				fmt.Fprintf(cfg.Log, "bench: %s on %s failed: %v\n", w.Name, r.label, err)
			}
			wr.Results = append(wr.Results, res)
		}
		rep.Workloads = append(rep.Workloads, wr)
		printWorkload(cfg.Out, wr)
		if len(w.Curve) > 0 && (wi+1 == len(workloads) || workloads[wi+1].Name != w.Name) {
			printCurve(cfg.Out, rep.curve(w.Name))
		}
	}
	rep.Targets = evaluateTargets(rep)
	printTargets(cfg.Out, rep.Targets)
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.LoadAvgEnd = loadAvg1()
	fmt.Fprintf(cfg.Out, "\nran %.0fs; load average %.2f at the end\n", rep.Seconds, rep.LoadAvgEnd)

	if cfg.ResultsDir != "" {
		if err := rep.write(cfg.ResultsDir); err != nil {
			return rep, fmt.Errorf("bench: %w", err)
		}
		fmt.Fprintf(cfg.Out, "\nwrote %s and %s\n", rep.JSONPath, rep.PNGPath)
	}
	return rep, nil
}

// SingleView labels deltaeds serving a topology workload's fleet the plain
// CLAs only, beside itself serving the zone variants.
const SingleView = "single-view"

// runner runs one workload on one server.
type runner struct {
	cfg  Options
	w    Workload
	kind string
	// zones is what the child serves variants for (0: plain CLAs); label
	// names the run in the report.
	zones    int
	label    string
	seed     uint64
	childLog io.Writer
}

// runnersFor returns the runs of workload w: one per selected server, or,
// for a topology workload, deltaeds serving the zone variants and deltaeds
// serving the plain CLAs (SingleView) to the same fleet and changes; the
// other servers have no per-client variants and are left out.
func runnersFor(cfg Options, w Workload, seed uint64, childLog io.Writer) []*runner {
	var out []*runner
	for _, kind := range cfg.Servers {
		if !w.RunsOn(kind) {
			continue
		}
		r := &runner{cfg: cfg, w: w, kind: kind, label: kind, seed: seed, childLog: childLog}
		switch {
		case w.Zones == 0:
			out = append(out, r)
		case kind == control.KindDeltaEDS:
			r.zones = w.Zones
			single := *r
			single.zones, single.label = 0, SingleView
			out = append(out, r, &single)
		default:
			fmt.Fprintf(cfg.Log, "bench: %s: skipping %s, which serves no per-client variants\n", w.Name, kind)
		}
	}
	return out
}

func (r *runner) profilePath(suffix string) string {
	if r.cfg.CPUProfileDir == "" {
		return ""
	}
	name := r.w.Name
	if len(r.w.Curve) > 0 {
		name += "-" + strconv.Itoa(r.w.Streams) // one file per point of the curve
	}
	return filepath.Join(r.cfg.CPUProfileDir, name+"-"+r.label+suffix)
}

func (r *runner) run(ctx context.Context) (res Result, err error) {
	// The witness fleet lives in this process: follow its live heap over
	// the run, and with profiles asked for, keep a heap profile at its peak.
	fleetPath := r.profilePath(".fleet.peak.heap.pprof")
	fleetHeap, stopHeap := peakheap.Start(ctx, fleetPath != "")
	defer func() {
		stopHeap()
		res.FleetPeakLiveHeapBytes = fleetHeap.Max()
		if fleetPath != "" {
			if perr := fleetHeap.WriteProfile(fleetPath); perr != nil && err == nil {
				err = perr
			}
		}
	}()

	g := newGen(r.w, r.seed)
	initial := g.initial()
	res.Subscriptions = g.subscriptions()

	profile := r.profilePath("")
	if r.w.Restart {
		profile = "" // the restarted child is profiled instead
	}
	ch, err := startChild(r.cfg.Command, r.kind, r.zones, "127.0.0.1:0", profile, r.w.Storm, r.childLog)
	if err != nil {
		return res, err
	}
	defer ch.kill()
	if err := ch.serve(ctx, initial, r.cfg.SyncTimeout); err != nil {
		return res, err
	}
	s0, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return res, err
	}

	f, err := startFleet(ctx, ch.addr, g)
	if err != nil {
		return res, err
	}
	defer f.close()
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SyncTimeout)
	err = f.waitSynced(sctx)
	cancel()
	if err != nil {
		return res, err
	}
	res.SyncSeconds = time.Since(t0).Seconds()
	s1, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return res, err
	}
	c1 := f.stats()
	res.SyncCPUSeconds = s1.CPUSeconds() - s0.CPUSeconds()
	res.BytesSync = c1.Bytes
	res.PeakRSSBytes, res.PeakLiveHeapBytes = s1.PeakRSSBytes, s1.PeakLiveHeapBytes

	if r.w.Restart {
		var restarted *child
		restarted, err = r.restart(ctx, &res, ch, f, c1, initial)
		if restarted != nil {
			defer restarted.kill()
			ch = restarted
		}
	} else {
		err = r.changes(ctx, &res, ch, f, g, s1, c1)
	}
	end := f.stats()
	res.Violations = end.Violations
	res.ViolationSamples = end.Samples
	if err != nil {
		return res, err
	}
	// The fleet goes first, so the server's shutdown breaks no stream.
	f.close()
	if err := ch.quit(control.StopTimeout + 10*time.Second); err != nil {
		return res, err
	}
	if end.Violations > 0 {
		return res, fmt.Errorf("%d protocol violations seen by the fleet, first: %s", end.Violations, end.Samples[0])
	}
	return res, nil
}

// changes sends the workload's changes at its rate and waits until every
// subscriber has applied the last one.
func (r *runner) changes(ctx context.Context, res *Result, ch *child, f *fleet, g *gen, s1 control.Stats, c1 fleetStats) error {
	if r.cfg.CPUProfileDir != "" {
		if _, err := ch.request(ctx, control.CmdProfile, control.ReplyOK, r.cfg.SyncTimeout); err != nil {
			return err
		}
		// Restart from the stats now that profiling has begun.
		var err error
		if s1, err = ch.stats(ctx, r.cfg.SyncTimeout); err != nil {
			return err
		}
	}
	f.tr.armed.Store(true)
	p1 := supervisor.SelfCPU().Seconds()
	interval := time.Duration(float64(time.Second) / r.w.Rate)
	buf := make([]byte, 0, 4096)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := range r.w.Changes {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		idx, id, line := g.next(buf)
		buf = line
		if g.sliced(idx) {
			f.tr.registerPrint(control.EndpointsPrint(g.eps[idx]), id)
		}
		f.tr.register(idx, id, time.Now())
		if err := ch.send(line); err != nil {
			return err
		}
	}
	f.tr.seal()
	drain := time.NewTimer(r.cfg.DrainTimeout)
	defer drain.Stop()
	var incomplete error
	select {
	case <-f.tr.allDone:
	case <-drain.C:
		incomplete = errIncomplete
	case <-ctx.Done():
		return ctx.Err()
	}
	res.ChangeSeconds = time.Since(start).Seconds()
	res.FleetCPUSeconds = supervisor.SelfCPU().Seconds() - p1
	s2, err := ch.stats(ctx, r.cfg.DrainTimeout)
	if err != nil {
		return err
	}
	c2 := f.stats()
	sent, done, lat := f.tr.result()
	res.Changes, res.Delivered = sent, done
	res.CPUSeconds = s2.CPUSeconds() - s1.CPUSeconds()
	res.UserSeconds = s2.UserSeconds - s1.UserSeconds
	res.SystemSeconds = s2.SystemSeconds - s1.SystemSeconds
	res.CPUPer1kChanges = res.CPUSeconds / float64(sent) * 1000
	res.VariantsPerChange = float64(s2.VariantBuilds-s1.VariantBuilds) / float64(sent)
	res.BytesChanges = c2.Bytes - c1.Bytes
	res.ResourcesChanges = c2.Resources - c1.Resources
	res.ResponsesChanges = c2.Responses - c1.Responses
	res.PeakRSSBytes, res.PeakLiveHeapBytes = s2.PeakRSSBytes, s2.PeakLiveHeapBytes
	res.Latency, res.CDF = summarize(lat)
	if incomplete != nil {
		return fmt.Errorf("%w: %d of %d delivered after %v", incomplete, done, sent, r.cfg.DrainTimeout)
	}
	return nil
}

// restart stops the converged server, starts a new one with the same state
// on the same address, and counts what the reconnecting fleet is sent. It
// returns the new child, which the caller must stop.
func (r *runner) restart(ctx context.Context, res *Result, old *child, f *fleet, c1 fleetStats, initial [][]byte) (*child, error) {
	if r.w.Storm {
		return r.storm(ctx, res, old, f, c1, initial)
	}
	if err := old.quit(control.StopTimeout + 10*time.Second); err != nil {
		return nil, fmt.Errorf("stop before restart: %w", err)
	}
	ch, err := startChild(r.cfg.Command, r.kind, r.zones, old.addr, r.profilePath("-restarted"), false, r.childLog)
	if err != nil {
		return nil, err
	}
	return ch, r.reconnect(ctx, res, ch, f, c1, initial)
}

func (r *runner) reconnect(ctx context.Context, res *Result, ch *child, f *fleet, c1 fleetStats, initial [][]byte) error {
	if err := ch.serve(ctx, initial, r.cfg.SyncTimeout); err != nil {
		return err
	}
	ready := time.Now()
	if r.cfg.CPUProfileDir != "" {
		if _, err := ch.request(ctx, control.CmdProfile, control.ReplyOK, r.cfg.SyncTimeout); err != nil {
			return err
		}
	}
	s0, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return err
	}
	p0 := supervisor.SelfCPU().Seconds()
	rctx, cancel := context.WithTimeout(ctx, r.cfg.SyncTimeout)
	reconnected, err := f.waitReconnected(rctx, c1, time.Second)
	cancel()
	if err != nil {
		return err
	}
	s1, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return err
	}
	c2 := f.stats()
	resent := c2.Resources - c1.Resources
	res.Resent = &resent
	res.ReconnectSeconds = reconnected.Sub(ready).Seconds()
	res.ReconnectCPU = s1.CPUSeconds() - s0.CPUSeconds()
	res.CPUSeconds = res.ReconnectCPU
	res.UserSeconds = s1.UserSeconds - s0.UserSeconds
	res.SystemSeconds = s1.SystemSeconds - s0.SystemSeconds
	res.FleetCPUSeconds = supervisor.SelfCPU().Seconds() - p0
	res.ReconnectBytes = c2.Bytes - c1.Bytes
	res.PeakRSSBytes = max(res.PeakRSSBytes, s1.PeakRSSBytes)
	res.PeakLiveHeapBytes = max(res.PeakLiveHeapBytes, s1.PeakLiveHeapBytes)
	// Nothing changed: every client must still hold exactly what it held
	// (its xDS state) and route exactly as before (see checkUnchanged).
	if err := f.checkUnchanged(0); err != nil {
		return fmt.Errorf("after reconnect: %w", err)
	}
	return nil
}

// stormCanary is the CLA only the storm's restarted server holds; every
// client asks for it once the old server is gone, so each reconnecting
// stream has an answer to wait for (as e2e's connection storm does).
const stormCanary = "bench/storm/canary"

// storm starts the successor on the old server's address (both listen with
// SO_REUSEPORT) with the same state plus the canary, kills the old server,
// and measures how long until every stream has had its first answer (the
// canary). Nothing the clients hold changed, so anything else they receive
// is resent and fails the run. It returns the new child, which the caller
// must stop.
func (r *runner) storm(ctx context.Context, res *Result, old *child, f *fleet, c1 fleetStats, initial [][]byte) (*child, error) {
	ch, err := startChild(r.cfg.Command, r.kind, r.zones, old.addr, r.profilePath("-restarted"), true, r.childLog)
	if err != nil {
		return nil, err
	}
	canary := control.AppendSet(nil, control.Set{Name: stormCanary,
		Endpoints: []control.Endpoint{{Addr: netip.MustParseAddr("198.19.255.1"), Port: 8080}}})
	if err := ch.serve(ctx, append(slices.Clip(initial), canary), r.cfg.SyncTimeout); err != nil {
		return ch, err
	}
	if r.cfg.CPUProfileDir != "" {
		if _, err := ch.request(ctx, control.CmdProfile, control.ReplyOK, r.cfg.SyncTimeout); err != nil {
			return ch, err
		}
	}
	s0, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return ch, err
	}
	p0 := supervisor.SelfCPU().Seconds()
	killed := time.Now()
	old.kill()
	// A client between streams names the canary in its next stream's first
	// request, with the versions it holds.
	f.ef.Subscribe(stormCanary)
	wctx, cancel := context.WithTimeout(ctx, r.cfg.SyncTimeout)
	err = f.ef.WaitAll(wctx, func(s envoysim.State) bool { _, ok := s.Route(stormCanary); return ok })
	cancel()
	if err != nil {
		return ch, fmt.Errorf("storm: waiting for every stream's first answer: %w", err)
	}
	answered := time.Now()
	s1, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return ch, err
	}
	res.FleetCPUSeconds = supervisor.SelfCPU().Seconds() - p0
	res.ReconnectSeconds = answered.Sub(killed).Seconds()
	res.ReconnectCPU = s1.CPUSeconds() - s0.CPUSeconds()
	res.CPUSeconds = res.ReconnectCPU
	res.UserSeconds = s1.UserSeconds - s0.UserSeconds
	res.SystemSeconds = s1.SystemSeconds - s0.SystemSeconds
	// Then until the fleet is quiet, so a late resend is counted too.
	rctx, cancel := context.WithTimeout(ctx, r.cfg.SyncTimeout)
	_, err = f.waitReconnected(rctx, c1, time.Second)
	cancel()
	if err != nil {
		return ch, err
	}
	s2, err := ch.stats(ctx, r.cfg.SyncTimeout)
	if err != nil {
		return ch, err
	}
	c2 := f.stats()
	resent := c2.Resources - c1.Resources - uint64(len(f.clients))
	res.Resent = &resent
	res.ReconnectBytes = c2.Bytes - c1.Bytes
	res.PeakRSSBytes = max(res.PeakRSSBytes, s2.PeakRSSBytes)
	res.PeakLiveHeapBytes = max(res.PeakLiveHeapBytes, s2.PeakLiveHeapBytes)
	if resent != 0 {
		return ch, fmt.Errorf("storm: %d resources resent to a fleet that held them (beyond one canary per stream)", resent)
	}
	if err := f.checkUnchanged(1); err != nil {
		return ch, fmt.Errorf("after the storm: %w", err)
	}
	return ch, nil
}

// summarize returns the percentiles of lat and its CDF at up to 200 points.
func summarize(lat []time.Duration) (*Percentiles, []CDFPoint) {
	if len(lat) == 0 {
		return nil, nil
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	q := func(p float64) float64 {
		i := int(p*float64(len(lat))+0.999999) - 1
		return ms(lat[min(max(i, 0), len(lat)-1)])
	}
	p := &Percentiles{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: ms(lat[len(lat)-1])}
	n := min(len(lat), 200)
	cdf := make([]CDFPoint, 0, n)
	for k := 1; k <= n; k++ {
		i := k*len(lat)/n - 1
		cdf = append(cdf, CDFPoint{Ms: ms(lat[i]), Fraction: float64(i+1) / float64(len(lat))})
	}
	return p, cdf
}

// selectWorkloads returns cfg's workloads at prof's scales (or cfg.Scale),
// each curve workload expanded into its points.
func selectWorkloads(cfg Options, prof Profile) ([]Workload, error) {
	rateFactor := prof.RateFactor
	if cfg.RateFactor > 0 {
		rateFactor = cfg.RateFactor
	}
	var workloads []Workload
	for _, name := range cfg.Workloads {
		scale := prof.Default
		if s, ok := prof.Scales[name]; ok {
			scale = s
		}
		if cfg.Scale > 0 {
			scale = cfg.Scale
		}
		w, err := ScaledWorkload(name, scale, rateFactor)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		if len(w.Curve) > 0 && len(cfg.CurveStreams) > 0 {
			if i := slices.IndexFunc(cfg.CurveStreams, func(n int) bool { return n <= 0 }); i >= 0 {
				return nil, fmt.Errorf("bench: curve streams must be positive, got %d", cfg.CurveStreams[i])
			}
			w.Curve = slices.Clone(cfg.CurveStreams)
			w.Streams = w.Curve[0]
		}
		workloads = append(workloads, w.Points()...)
	}
	return workloads, nil
}
