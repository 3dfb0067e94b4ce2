package bench

import (
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/deltaeds/deltaeds/bench/control"
)

func TestRollingStaysWithinSurge(t *testing.T) {
	w, err := ScaledWorkload("rolling-100", 0.2, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(w, 1)
	if len(g.eps[0]) != 100 {
		t.Fatalf("rolling CLA starts with %d endpoints", len(g.eps[0]))
	}
	first := g.eps[0][0]
	for i := range w.Changes {
		idx, id, line := g.next(nil)
		if idx != 0 || id != uint64(i+1) {
			t.Fatalf("change %d: idx %d id %d", i, idx, id)
		}
		if n := len(g.eps[0]); n < 100 || n > 125 {
			t.Fatalf("change %d: %d endpoints, want 100..125 (25%% surge)", i, n)
		}
		s, err := control.ParseSet(string(line[len("set ") : len(line)-1]))
		if err != nil || len(s.Endpoints) != len(g.eps[0]) || s.ID != id {
			t.Fatalf("change %d: line %q parses to %+v, %v", i, line, s, err)
		}
	}
	if len(g.eps[0]) != 100 {
		t.Fatalf("after whole rollouts: %d endpoints", len(g.eps[0]))
	}
	for _, e := range g.eps[0] {
		if e == first {
			t.Fatalf("an old endpoint survived the rollout")
		}
	}
}

func TestSubscriptionsCoverEveryName(t *testing.T) {
	for _, name := range WorkloadNames() {
		w, err := ScaledWorkload(name, 0.2, 1)
		if err != nil {
			t.Fatal(err)
		}
		g := newGen(w, 1)
		for s := range g.subs {
			if got, want := len(g.subscribedNames(s)), g.expected(s); !w.Wildcard && got != want {
				t.Errorf("%s stream %d: %d names, expected %d", name, s, got, want)
			}
		}
		if len(g.changeable) != w.CLAs {
			t.Errorf("%s: %d of %d names have a subscriber", name, len(g.changeable), w.CLAs)
		}
	}
}

func TestTrackerCoalescing(t *testing.T) {
	w := Workload{Name: "t", CLAs: 2, Endpoints: 1, Streams: 2, Wildcard: true}
	tr := newTracker(newGen(w, 1))
	t0 := time.Unix(0, 0)
	tr.register(0, 1, t0)
	tr.register(0, 2, t0.Add(time.Millisecond))
	tr.register(1, 3, t0.Add(2*time.Millisecond))
	tr.seal()
	// Client 0 sees change 1 then 2; client 1 skips straight to 2.
	tr.apply(0, []applied{{name: 0, id: 1}}, t0.Add(5*time.Millisecond))
	tr.apply(0, []applied{{name: 0, id: 2}}, t0.Add(6*time.Millisecond))
	tr.apply(1, []applied{{name: 0, id: 2}, {name: 1, id: 3}}, t0.Add(10*time.Millisecond))
	select {
	case <-tr.allDone:
		t.Fatal("done before change 3 reached client 0")
	default:
	}
	tr.apply(0, []applied{{name: 1, id: 3}}, t0.Add(12*time.Millisecond))
	<-tr.allDone
	sent, done, lat := tr.result()
	want := []time.Duration{10 * time.Millisecond, 9 * time.Millisecond, 10 * time.Millisecond}
	if sent != 3 || done != 3 || len(lat) != 3 || lat[0] != want[0] || lat[1] != want[1] || lat[2] != want[2] {
		t.Fatalf("sent %d done %d lat %v, want 3 3 %v", sent, done, lat, want)
	}
}

// rolling-10k scales its Service with the profile and runs part of a
// rollout (its changes are fewer than a whole rollout's steps).
func TestRolling10kScalesItsService(t *testing.T) {
	for _, c := range []struct {
		scale            float64
		endpoints, steps int
	}{{1, 10000, 200}, {0.1, 1000, 50}} {
		w, err := ScaledWorkload("rolling-10k", c.scale, 1)
		if err != nil {
			t.Fatal(err)
		}
		if w.RollingEndpoints != c.endpoints || w.Changes != c.steps {
			t.Fatalf("scale %.2f: %d endpoints, %d changes; want %d and %d", c.scale, w.RollingEndpoints, w.Changes, c.endpoints, c.steps)
		}
		g := newGen(w, 1)
		for range w.Changes {
			if idx, _, _ := g.next(nil); idx != 0 {
				t.Fatalf("a change of CLA %d, not the rolling one", idx)
			}
		}
		if n := len(g.eps[0]); n != c.endpoints+c.steps {
			t.Fatalf("scale %.2f: %d endpoints after %d surge steps", c.scale, n, c.steps)
		}
	}
}

func TestSelectWorkloadsCurveStreams(t *testing.T) {
	full := Profiles["full"]
	ws, err := selectWorkloads(Options{Workloads: []string{"fleet-curve", "storm"}, CurveStreams: []int{1000}}, full)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 || ws[0].Name != "fleet-curve" || ws[0].Streams != 1000 || ws[0].CLAs != 10000 || ws[1].Name != "storm" || ws[1].Streams != 10000 {
		t.Fatalf("got %+v", ws)
	}
	// Taken as given, not scaled; without it the profile's scaled points.
	ws, err = selectWorkloads(Options{Workloads: []string{"fleet-curve"}, CurveStreams: []int{7, 9}, Scale: 0.1}, full)
	if err != nil || len(ws) != 2 || ws[0].Streams != 7 || ws[1].Streams != 9 || ws[0].CLAs != 1000 {
		t.Fatalf("got %+v, %v", ws, err)
	}
	ws, err = selectWorkloads(Options{Workloads: []string{"fleet-curve"}}, Profiles["short"])
	if err != nil || len(ws) != 3 || ws[0].Streams != 50 || ws[2].Streams != 500 {
		t.Fatalf("got %+v, %v", ws, err)
	}
	if _, err := selectWorkloads(Options{Workloads: []string{"fleet-curve"}, CurveStreams: []int{0}}, full); err == nil {
		t.Fatal("a zero stream count was accepted")
	}
}

// rolling-10k sends its Service as EndpointSlices: every step is one slice
// line, no slice ever holds more than SliceSize endpoints, the slices
// together always hold exactly the CLA's endpoints, and the print the
// parent attributes changes by is theirs.
func TestRollingSlices(t *testing.T) {
	w, err := ScaledWorkload("rolling-10k", 0.1, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.Changes = 4 * w.RollingEndpoints // two whole rollouts
	g := newGen(w, 1)
	lines := g.initial()
	if want := w.RollingEndpoints/w.SliceSize + w.CLAs - 1; len(lines) != want {
		t.Fatalf("initial state: %d lines, want %d", len(lines), want)
	}
	// What a child holds: the slices by name, as the lines set them.
	held := map[string][]control.Endpoint{}
	apply := func(line []byte) control.Slice {
		t.Helper()
		cmd, args, _ := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
		if cmd != control.CmdSlice {
			t.Fatalf("line %q is not a slice line", line)
		}
		s, err := control.ParseSlice(args)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Endpoints) > w.SliceSize {
			t.Fatalf("slice %s holds %d endpoints", s.Slice, len(s.Endpoints))
		}
		if len(s.Endpoints) == 0 {
			delete(held, s.Slice)
		} else {
			held[s.Slice] = s.Endpoints
		}
		return s
	}
	for _, l := range lines {
		if strings.HasPrefix(string(l), control.CmdSlice+" ") {
			apply(l)
		}
	}
	deleted := 0
	for i := range w.Changes {
		idx, id, line := g.next(nil)
		s := apply(line)
		if idx != 0 || s.ID != id || s.Name != rollingName {
			t.Fatalf("change %d: idx %d, %+v", i, idx, s)
		}
		if len(s.Endpoints) == 0 {
			deleted++
		}
		var all []control.Endpoint
		for _, e := range held {
			all = append(all, e...)
		}
		if len(all) != len(g.eps[0]) || control.EndpointsPrint(all) != control.EndpointsPrint(g.eps[0]) {
			t.Fatalf("change %d: the slices hold %d endpoints, the CLA %d, or the prints differ", i, len(all), len(g.eps[0]))
		}
	}
	if deleted == 0 {
		t.Error("two rollouts deleted no slice")
	}
}

// A sliced CLA's version is attributed by its endpoints, once per version;
// the other CLAs keep their marker. Content of no change (the initial state,
// or a translation that lost an endpoint) is attributed to none.
func TestTrackerAttributesByPrint(t *testing.T) {
	w, err := ScaledWorkload("rolling-10k", 0.1, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(w, 1)
	tr := newTracker(g)
	if tr.sliced != 0 {
		t.Fatalf("sliced CLA %d, want 0", tr.sliced)
	}
	initial := control.BuildCLA(control.Set{ID: 0, Name: rollingName, Endpoints: g.eps[0]})
	_, id, _ := g.next(nil)
	tr.registerPrint(control.EndpointsPrint(g.eps[0]), id)
	// Built with another change id: the marker is ignored for this CLA.
	delivered := control.BuildCLA(control.Set{ID: 99, Name: rollingName, Endpoints: g.eps[0]})
	lost := control.BuildCLA(control.Set{ID: id, Name: rollingName, Endpoints: g.eps[0][1:]})
	for _, c := range []struct {
		version string
		cla     *endpointv3.ClusterLoadAssignment
		want    uint32
	}{
		{"v0", initial, 0},
		{"v1", delivered, uint32(id)},
		{"v1", lost, uint32(id)}, // the version, not the content, after the first
		{"v2", lost, 0},
	} {
		got, ok := tr.changeOf(0, c.version, c.cla)
		if got != c.want || ok != (c.want > 0) {
			t.Errorf("version %s: change %d, %v; want %d", c.version, got, ok, c.want)
		}
	}
	marked := control.BuildCLA(control.Set{ID: 7, Name: g.names[1], Endpoints: g.eps[1]})
	if got, ok := tr.changeOf(1, "v1", marked); !ok || got != 7 {
		t.Errorf("a marked CLA: change %d, %v; want 7", got, ok)
	}
}
