package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/deltaeds/deltaeds/bench/control"
)

// Workload is one scenario at one scale.
type Workload struct {
	Name string `json:"name"`
	// Scale is the factor applied to the full-scale definition.
	Scale float64 `json:"scale"`
	// CLAs is the number of ClusterLoadAssignments, each with Endpoints
	// endpoints (the rolling CLA, if any, has RollingEndpoints instead).
	CLAs      int `json:"clas"`
	Endpoints int `json:"endpoints"`
	// Streams is the number of simulated Envoys, each on its own stream;
	// each subscribes to every CLA (Wildcard) or to NamesPerStream names.
	Streams        int  `json:"streams"`
	Wildcard       bool `json:"wildcard,omitempty"`
	NamesPerStream int  `json:"names_per_stream,omitempty"`
	// NamesMin, when set, makes each stream want a number of names drawn
	// uniformly from [NamesMin, NamesPerStream] instead of NamesPerStream.
	NamesMin int `json:"names_min,omitempty"`
	// Curve, when set, runs the workload once per entry, with that many
	// streams (at full scale); Streams is the current point's.
	Curve []int `json:"curve,omitempty"`
	// Changes are sent at Rate per second. Single-endpoint changes replace
	// one endpoint of a random subscribed CLA; with RollingEndpoints > 0
	// every change is one step of a rolling restart of one CLA.
	Changes          int     `json:"changes"`
	Rate             float64 `json:"rate_per_second"`
	RollingEndpoints int     `json:"rolling_endpoints,omitempty"`
	// ScaleRolling scales RollingEndpoints with the workload (rolling-10k's
	// Service is scaled down in the short profile; rolling-100's is not)
	// and divides the rate by the scale: a change of a scaled-down Service
	// carries scale^2 of the bytes to the fleet.
	ScaleRolling bool `json:"scale_rolling,omitempty"`
	// SliceSize, when positive, sends the rolling CLA slice by slice: its
	// endpoints are held in EndpointSlices of at most SliceSize (the
	// EndpointSlice controller's default maximum is 100), each rolling step
	// sends the one slice it changed (control.Slice), and deltaeds
	// translates the slices as its watch does (translate.ServiceCache)
	// while the other servers are given the CLA they make up. Its changes
	// are attributed by their endpoints (control.CLAPrint), since a
	// translated CLA carries no change marker.
	SliceSize int `json:"slice_size,omitempty"`
	// Restart makes this the reconnect workload: no changes; the server is
	// restarted once the fleet has converged.
	Restart bool `json:"restart,omitempty"`
	// Storm makes a restart a storm: the new server is already listening
	// (SO_REUSEPORT on the same address) when the old one is killed, so the
	// whole fleet reconnects within Envoy's first backoff, each client also
	// asking for a canary CLA it never had: its answer is the stream's first.
	Storm bool `json:"storm,omitempty"`
	// Cluster makes this the cluster workload: Slices EndpointSlices of
	// Endpoints endpoints each, created in a real kube-apiserver, read by
	// the real deltaeds binary (see cluster.go). No fleet, no server kinds.
	Cluster bool `json:"cluster,omitempty"`
	Slices  int  `json:"slices,omitempty"`
	// SlicesPerService groups the slices into Services (one CLA each).
	SlicesPerService int `json:"slices_per_service,omitempty"`
	// Servers, when set, limits the workload to these server kinds (an
	// anchor whose cost makes the run impractical is left out, and said so).
	Servers []string `json:"servers,omitempty"`
	// Zones, when positive, makes this a topology workload: stream i runs
	// in zone i mod Zones (its node.locality.zone), every endpoint is in a
	// zone (control.ZoneOf), and deltaeds serves each zone a variant of
	// every CLA (its zone's endpoints at priority 0, the others at 1), as it
	// does for Services with zone hints. Only deltaeds runs it, beside
	// itself serving the plain CLAs to the same fleet (single-view).
	Zones int `json:"zones,omitempty"`
}

// The workloads, at full scale, as the issue defines them.
var fullScale = []Workload{
	{Name: "contour-8k", CLAs: 8000, Endpoints: 10, Streams: 4, Wildcard: true, Changes: 2000, Rate: 100},
	{Name: "fleet", CLAs: 10000, Endpoints: 10, Streams: 200, NamesPerStream: 2000, Changes: 5000, Rate: 200},
	// fleet over 3 zones: every CLA has a variant per zone (issue 11).
	{Name: "fleet-zoned", CLAs: 10000, Endpoints: 10, Streams: 200, NamesPerStream: 2000, Changes: 5000, Rate: 200, Zones: 3,
		Servers: []string{control.KindDeltaEDS}},
	// One rolling CLA plus 10,000 idle ones; each stream wants the rolling
	// CLA and 1,000 idle names. 5 rollouts of 100 endpoints, 200 steps each.
	{Name: "rolling-100", CLAs: 10001, Endpoints: 10, Streams: 100, NamesPerStream: 1000, RollingEndpoints: 100, Changes: 1000, Rate: 100},
	{Name: "reconnect", CLAs: 10000, Endpoints: 10, Streams: 200, NamesPerStream: 2000, Restart: true},
	// Issue 14: a 10,000-pod Service rolled pod by pod (25% surge) under a
	// 200-stream fleet that all subscribe to it (and to 10 of 50 idle CLAs),
	// sent as 100 EndpointSlices of 100: deltaeds translates the one slice
	// each step changes. Every change is a 10,000-endpoint CLA to 200
	// streams (about 50 MB of responses), hence the slow rate: at 4/s the
	// fleet fell behind every server, before it shared decoded resources;
	// at 1/s it uses about a fifth of a core. 200 steps at full size so that
	// p99 is not the maximum (the short profile keeps 50). SnapshotCache is
	// left out (a snapshot per node per change).
	{Name: "rolling-10k", CLAs: 51, Endpoints: 10, Streams: 200, NamesPerStream: 10, RollingEndpoints: 10000, ScaleRolling: true, SliceSize: 100,
		Changes: 200, Rate: 1, Servers: []string{control.KindDeltaEDS, control.KindLinear, control.KindWire}},
	// Issue 14. The same 10,000 CLAs under 1,000, 5,000 and 10,000 streams
	// of 500-2,000 names each; changes at a rate each point's fleet absorbs
	// (every change reaches ~1,250 subscribers at 10,000 streams).
	// SnapshotCache is left out: it sets a snapshot per node per change.
	{Name: "fleet-curve", CLAs: 10000, Endpoints: 10, Curve: []int{1000, 5000, 10000}, NamesMin: 500, NamesPerStream: 2000,
		Changes: 1000, Rate: 20, Servers: []string{control.KindDeltaEDS, control.KindLinear, control.KindWire}},
	// Every stream of the 10,000-stream fleet reconnects at once to a
	// restarted server, declaring its versions.
	{Name: "storm", CLAs: 10000, Endpoints: 10, Streams: 10000, NamesMin: 500, NamesPerStream: 2000, Restart: true, Storm: true,
		Servers: []string{control.KindDeltaEDS, control.KindLinear, control.KindWire}},
	// 100,000 EndpointSlices of 10 endpoints in a real kube-apiserver,
	// 4 slices per Service (25,000 CLAs), read by the deltaeds binary.
	{Name: "cluster-100k", Cluster: true, Slices: 100000, Endpoints: 10, SlicesPerService: 4, Servers: []string{control.KindDeltaEDS}},
}

// WorkloadNames lists the workloads in run order.
func WorkloadNames() []string {
	out := make([]string, len(fullScale))
	for i, w := range fullScale {
		out[i] = w.Name
	}
	return out
}

// Profile is a named set of scale factors.
type Profile struct {
	Name string
	// Scales by workload name; a missing workload runs at Default.
	Scales  map[string]float64
	Default float64
	// RateFactor multiplies every workload's change rate.
	RateFactor float64
}

// Profiles are the named profiles: tiny (the smoke test), short (make
// bench, a few minutes on 2 cores) and full (the numbers).
var Profiles = map[string]Profile{
	"tiny":  {Name: "tiny", Default: 0.02, RateFactor: 4},
	"short": {Name: "short", Scales: map[string]float64{"contour-8k": 0.25, "fleet-curve": 0.05, "storm": 0.05, "cluster-100k": 0.03, "rolling-10k": 0.1}, Default: 0.2, RateFactor: 1},
	"full":  {Name: "full", Default: 1, RateFactor: 1},
}

// ScaledWorkload returns the named workload at the given scale, with its
// rate multiplied by rateFactor.
func ScaledWorkload(name string, scale, rateFactor float64) (Workload, error) {
	i := slices.IndexFunc(fullScale, func(w Workload) bool { return w.Name == name })
	if i < 0 {
		return Workload{}, fmt.Errorf("unknown workload %q (want one of %s)", name, strings.Join(WorkloadNames(), ", "))
	}
	if scale <= 0 || math.IsNaN(scale) || math.IsInf(scale, 0) {
		return Workload{}, fmt.Errorf("workload %s: scale must be positive, got %v", name, scale)
	}
	if rateFactor <= 0 {
		rateFactor = 1
	}
	w := fullScale[i]
	sc := func(n, lo int) int { return max(lo, int(math.Round(float64(n)*scale))) }
	w.Scale = scale
	if w.Cluster {
		w.Slices = sc(w.Slices, w.SlicesPerService)
		return w, nil
	}
	w.CLAs = sc(w.CLAs, 50)
	w.Streams = sc(w.Streams, 4)
	if w.Curve != nil {
		w.Curve = slices.Clone(w.Curve)
		for i, n := range w.Curve {
			w.Curve[i] = sc(n, 4)
		}
		w.Streams = w.Curve[0]
	}
	if w.NamesPerStream > 0 {
		w.NamesPerStream = min(sc(w.NamesPerStream, 10), w.CLAs)
	}
	if w.NamesMin > 0 {
		w.NamesMin = min(sc(w.NamesMin, 5), w.NamesPerStream)
	}
	w.Rate *= rateFactor
	if w.ScaleRolling {
		w.RollingEndpoints = sc(w.RollingEndpoints, 100)
		w.Rate /= scale
	}
	if w.RollingEndpoints > 0 && w.Changes >= 2*w.RollingEndpoints {
		// Whole rollouts only, when the workload asks for any.
		steps := 2 * w.RollingEndpoints
		w.Changes = max(1, int(math.Round(float64(w.Changes)*scale/float64(steps)))) * steps
	} else if w.Changes > 0 {
		w.Changes = sc(w.Changes, 50)
	}
	return w, nil
}

// Points returns the workload once per point of its curve (itself alone
// when it has none).
func (w Workload) Points() []Workload {
	if len(w.Curve) == 0 {
		return []Workload{w}
	}
	out := make([]Workload, len(w.Curve))
	for i, n := range w.Curve {
		out[i] = w
		out[i].Streams = n
	}
	return out
}

// RunsOn says whether server kind runs this workload.
func (w Workload) RunsOn(kind string) bool {
	return len(w.Servers) == 0 || slices.Contains(w.Servers, kind)
}

// Describe is a one-line summary of the workload's size.
func (w Workload) Describe() string {
	var b strings.Builder
	if w.Cluster {
		fmt.Fprintf(&b, "scale %.2f: %d EndpointSlices x %d endpoints in a real kube-apiserver, %d per Service (%d CLAs), read by the deltaeds binary",
			w.Scale, w.Slices, w.Endpoints, w.SlicesPerService, w.Slices/w.SlicesPerService)
		return b.String()
	}
	fmt.Fprintf(&b, "scale %.2f: %d CLAs x %d endpoints, %d streams", w.Scale, w.CLAs, w.Endpoints, w.Streams)
	switch {
	case w.Wildcard:
		fmt.Fprintf(&b, " (wildcard: %d subscriptions)", w.Streams*w.CLAs)
	case w.NamesMin > 0:
		fmt.Fprintf(&b, " x %d-%d names", w.NamesMin, w.NamesPerStream)
	default:
		fmt.Fprintf(&b, " x %d names", w.NamesPerStream)
		if w.RollingEndpoints > 0 {
			b.WriteString(" + the rolling CLA")
		}
	}
	if w.Zones > 0 {
		fmt.Fprintf(&b, ", over %d zones", w.Zones)
	}
	switch {
	case w.Storm:
		b.WriteString(", server killed once converged, its successor already listening: every stream reconnects at once")
	case w.Restart:
		b.WriteString(", server restarted once converged")
	case w.RollingEndpoints > 0:
		fmt.Fprintf(&b, ", %d rolling steps of a %d-endpoint CLA (25%% surge) @ %g/s", w.Changes, w.RollingEndpoints, w.Rate)
	default:
		fmt.Fprintf(&b, ", %d single-endpoint changes @ %.0f/s", w.Changes, w.Rate)
	}
	return b.String()
}

// gen holds the state of a workload's CLAs on the parent side and produces
// its changes. It is deterministic for a given workload and seed, so every
// server sees exactly the same changes.
type gen struct {
	w     Workload
	rng   *rand.Rand
	names []string
	eps   [][]control.Endpoint
	// subs lists each stream's names by index (nil: wildcard);
	// subscribers counts the streams wanting each name.
	subs        [][]int
	subscribers []int32
	// changeable holds the names single-endpoint changes pick from: those
	// with at least one subscriber.
	changeable []int
	nextIP     uint32
	nextID     uint64
	// rolling state: step within the current rollout.
	rollStep int
	// With w.SliceSize: the rolling CLA's slices (a deleted one has no
	// name), the slice each endpoint of eps[0] is in, and the next slice's
	// number.
	rollSlices []rollSlice
	epSlice    []int
	nextSlice  int
}

// rollSlice is one EndpointSlice of the rolling CLA.
type rollSlice struct {
	name string
	eps  []control.Endpoint
}

// rollingName is the CLA a rolling workload restarts (index 0).
const rollingName = "bench/rolling/http"

// ipBase is 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks:
// these addresses are data in CLAs, never dialled.
var ipBase = netip.MustParseAddr("198.18.0.0").As4()

const ipSpace = 1 << 17

func newGen(w Workload, seed uint64) *gen {
	g := &gen{w: w, rng: rand.New(rand.NewPCG(seed, 0x5eed))}
	g.names = make([]string, w.CLAs)
	g.eps = make([][]control.Endpoint, w.CLAs)
	for i := range g.names {
		n := w.Endpoints
		if w.RollingEndpoints > 0 && i == 0 {
			g.names[i] = rollingName
			n = w.RollingEndpoints
		} else {
			g.names[i] = fmt.Sprintf("bench/svc-%05d/http", i)
		}
		g.eps[i] = make([]control.Endpoint, n)
		for j := range g.eps[i] {
			g.eps[i][j] = g.newEndpoint()
		}
	}

	if w.RollingEndpoints > 0 && w.SliceSize > 0 {
		for _, e := range g.eps[0] {
			g.addToSlice(e)
		}
	}

	g.subscribers = make([]int32, w.CLAs)
	g.subs = make([][]int, w.Streams)
	if w.Wildcard {
		for i := range g.subscribers {
			g.subscribers[i] = int32(w.Streams)
		}
	} else {
		// Overlapping windows spread evenly over the names, so each name is
		// wanted by about Streams*NamesPerStream/CLAs streams.
		first := 0
		if w.RollingEndpoints > 0 {
			first = 1 // the rolling CLA is wanted by every stream
		}
		pool := w.CLAs - first
		for s := range g.subs {
			per := min(w.NamesPerStream, pool)
			if w.NamesMin > 0 && w.NamesMin < per {
				per = w.NamesMin + g.rng.IntN(per-w.NamesMin+1)
			}
			start := s * pool / w.Streams
			names := make([]int, 0, per+first)
			if first == 1 {
				names = append(names, 0)
			}
			for k := range per {
				names = append(names, first+(start+k)%pool)
			}
			for _, n := range names {
				g.subscribers[n]++
			}
			g.subs[s] = names
		}
	}
	for i, n := range g.subscribers {
		if n > 0 {
			g.changeable = append(g.changeable, i)
		}
	}
	return g
}

func (g *gen) newEndpoint() control.Endpoint {
	v := g.nextIP % ipSpace
	g.nextIP++
	a := ipBase
	a[1] += byte(v >> 16)
	a[2] = byte(v >> 8)
	a[3] = byte(v)
	return control.Endpoint{Addr: netip.AddrFrom4(a), Port: 8080}
}

// sliced says whether CLA idx is sent slice by slice.
func (g *gen) sliced(idx int) bool { return idx == 0 && g.rollSlices != nil }

// addToSlice puts a new endpoint of the rolling CLA in the first slice
// with room, or in a new slice, and returns that slice's index.
func (g *gen) addToSlice(e control.Endpoint) int {
	k := slices.IndexFunc(g.rollSlices, func(s rollSlice) bool { return s.name != "" && len(s.eps) < g.w.SliceSize })
	if k < 0 {
		k = len(g.rollSlices)
		g.rollSlices = append(g.rollSlices, rollSlice{name: "rolling-" + strconv.Itoa(g.nextSlice)})
		g.nextSlice++
	}
	g.rollSlices[k].eps = append(g.rollSlices[k].eps, e)
	g.epSlice = append(g.epSlice, k)
	return k
}

// removeOldest takes the rolling CLA's oldest endpoint out of its slice,
// and returns that slice's index; a slice left empty is deleted (its
// line then has no endpoint).
func (g *gen) removeOldest() int {
	e, k := g.eps[0][0], g.epSlice[0]
	g.epSlice = g.epSlice[1:]
	sl := &g.rollSlices[k]
	sl.eps = slices.DeleteFunc(sl.eps, func(x control.Endpoint) bool { return x == e })
	return k
}

// sliceLine is the slice line for slice k of the rolling CLA, and deletes
// the slice once it is sent empty.
func (g *gen) sliceLine(buf []byte, id uint64, k int) []byte {
	sl := &g.rollSlices[k]
	buf = control.AppendSlice(buf, control.Slice{ID: id, Name: g.names[0], Slice: sl.name, Endpoints: sl.eps})
	if len(sl.eps) == 0 {
		*sl = rollSlice{}
	}
	return buf
}

// initial returns the lines of the initial state (change id 0).
func (g *gen) initial() [][]byte {
	out := make([][]byte, 0, len(g.names)+len(g.rollSlices))
	for i := range g.names {
		if g.sliced(i) {
			for k := range g.rollSlices {
				out = append(out, g.sliceLine(nil, 0, k))
			}
			continue
		}
		out = append(out, control.AppendSet(nil, control.Set{ID: 0, Name: g.names[i], Endpoints: g.eps[i]}))
	}
	return out
}

// subscriptions is the number of (stream, name) pairs.
func (g *gen) subscriptions() int {
	n := 0
	for _, c := range g.subscribers {
		n += int(c)
	}
	return n
}

// expected returns how many CLAs stream s holds once synced.
func (g *gen) expected(s int) int {
	if g.subs[s] == nil {
		return len(g.names)
	}
	return len(g.subs[s])
}

// subscribedNames returns stream s's names (nil for wildcard).
func (g *gen) subscribedNames(s int) []string {
	if g.subs[s] == nil {
		return nil
	}
	out := make([]string, len(g.subs[s]))
	for i, n := range g.subs[s] {
		out[i] = g.names[n]
	}
	sort.Strings(out)
	return out
}

// next produces the next change: the name's index and its set line.
func (g *gen) next(buf []byte) (int, uint64, []byte) {
	g.nextID++
	id := g.nextID
	var idx int
	if g.w.RollingEndpoints > 0 {
		idx = 0
		surge := max(1, g.w.RollingEndpoints/4)
		step := g.rollStep % (2 * g.w.RollingEndpoints)
		g.rollStep++
		if step%(2*surge) < surge || len(g.eps[0]) == 0 {
			// A new pod becomes ready.
			e := g.newEndpoint()
			g.eps[0] = append(g.eps[0], e)
			if g.sliced(0) {
				return 0, id, g.sliceLine(buf[:0], id, g.addToSlice(e))
			}
		} else {
			// The oldest pod goes away.
			if g.sliced(0) {
				k := g.removeOldest()
				g.eps[0] = slices.Delete(g.eps[0], 0, 1)
				return 0, id, g.sliceLine(buf[:0], id, k)
			}
			g.eps[0] = slices.Delete(g.eps[0], 0, 1)
		}
	} else {
		idx = g.changeable[g.rng.IntN(len(g.changeable))]
		g.eps[idx][g.rng.IntN(len(g.eps[idx]))] = g.newEndpoint()
	}
	return idx, id, control.AppendSet(buf[:0], control.Set{ID: id, Name: g.names[idx], Endpoints: g.eps[idx]})
}
