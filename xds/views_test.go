package xds

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// zoneVariants is a fake Variants: a client in one of its zones gets that
// zone's variant, key "zone:Z", whose content is generation zones[Z] of the
// name's test content with the key in its locality's sub_zone (so variants
// of different keys or generations differ). Any other view, whatever its
// node, gets the plain resource. It counts its builds.
type zoneVariants struct {
	name   string
	zones  map[string]int
	builds *atomic.Int64
}

func (z zoneVariants) Key(v View) string {
	if _, ok := z.zones[v.Zone]; ok {
		return "zone:" + v.Zone
	}
	return ""
}

func (z zoneVariants) Build(v View) proto.Message {
	z.builds.Add(1)
	return zoneCLA(z.name, z.zones[v.Zone], "zone:"+v.Zone)
}

// zoneCLA is the content of a zone variant.
func zoneCLA(name string, gen int, key string) *endpointv3.ClusterLoadAssignment {
	m := newCLA(name, gen, testEndpoints)
	m.Endpoints[0].Locality.SubZone = key
	return m
}

// vlabel renders a resource as "name@gen" (plain), "name@gen/KEY" (a zone
// variant) or "name@empty" (the stand-in), decoding its bytes.
func vlabel(t testing.TB, r *Resource) string {
	t.Helper()
	var m endpointv3.ClusterLoadAssignment
	if err := r.Wire.GetResource().UnmarshalTo(&m); err != nil {
		t.Fatalf("decode %s: %v", r.Name, err)
	}
	if len(m.Endpoints) == 0 {
		return r.Name + "@empty"
	}
	l := m.Endpoints[0]
	port := l.LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	out := fmt.Sprintf("%s@%d", r.Name, port-8000)
	if l.Locality.SubZone != "" {
		out += "/" + l.Locality.SubZone
	}
	return out
}

// vstep is one step of a views table test: an action, then every open
// stream takes its Next batch.
type vstep struct {
	apply []ResourceUpdate
	// open opens stream open at view, subscribing to sub (which may hold
	// Wildcard); update changes stream update's subscription; close closes
	// stream close.
	open, update, close string
	view                View
	sub, unsub          []string
	declared            map[string]string

	// want is, by stream, what its Next returns: resources as vlabel
	// renders them, removals as "-name". A stream left out gets nothing.
	want map[string][]string
	// woken lists the streams woken with nothing to send, beside those
	// in want.
	woken []string
	// builds is the number of variants built during the step; held the
	// number the store holds after it.
	builds, held int
}

// vset is an update of name to plain generation gen with zone variants
// (zone, generation) for the zones in zones.
func (f *viewsFixture) vset(name string, gen int, zones map[string]int) ResourceUpdate {
	return ResourceUpdate{Name: name, Message: newCLA(name, gen, testEndpoints), Variants: zoneVariants{name, zones, &f.builds}}
}

type viewsFixture struct {
	builds atomic.Int64
}

func TestVariants(t *testing.T) {
	z1, z2, z3 := View{Zone: "z1"}, View{Zone: "z2"}, View{Zone: "z3"}
	f := &viewsFixture{}
	cases := []struct {
		name  string
		steps []vstep
	}{
		{"zero view plain, each zone its variant, one build per key", []vstep{
			{open: "A", view: z1, sub: []string{"a"}, want: map[string][]string{"A": {"a@empty"}}},
			{open: "B", view: z1, sub: []string{"a"}, want: map[string][]string{"B": {"a@empty"}}},
			{open: "C", view: z2, sub: []string{"a"}, want: map[string][]string{"C": {"a@empty"}}},
			{open: "D", sub: []string{"a"}, want: map[string][]string{"D": {"a@empty"}}},
			// z1 has a variant, z2 none: C gets the plain resource.
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1})}, builds: 1, held: 1, want: map[string][]string{
				"A": {"a@1/zone:z1"}, "B": {"a@1/zone:z1"}, "C": {"a@1"}, "D": {"a@1"}}},
			// Nodes in one zone share its variant: no build.
			{open: "E", view: View{Zone: "z1", Node: "n1"}, sub: []string{"a"}, held: 1, want: map[string][]string{"E": {"a@1/zone:z1"}}},
		}},
		{"keys change with the content; only changed deliveries wake", []vstep{
			{open: "A", view: z1, sub: []string{"a"}, want: map[string][]string{"A": {"a@empty"}}},
			{open: "C", view: z2, sub: []string{"a"}, want: map[string][]string{"C": {"a@empty"}}},
			{open: "D", sub: []string{"a"}, want: map[string][]string{"D": {"a@empty"}}},
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1})}, builds: 1, held: 1, want: map[string][]string{
				"A": {"a@1/zone:z1"}, "C": {"a@1"}, "D": {"a@1"}}},
			// The variant moves from z1 to z2; the plain resource is unchanged.
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z2": 1})}, builds: 1, held: 1, want: map[string][]string{
				"A": {"a@1"}, "C": {"a@1/zone:z2"}}},
			// Both zones; the same content again wakes nobody.
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 2, "z2": 1})}, builds: 2, held: 2, want: map[string][]string{
				"A": {"a@2/zone:z1"}}},
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 2, "z2": 1})}, builds: 2, held: 2},
			// Only the plain resource changes: only the zero view wakes.
			{apply: []ResourceUpdate{f.vset("a", 3, map[string]int{"z1": 2, "z2": 1})}, builds: 2, held: 2, want: map[string][]string{
				"D": {"a@3"}}},
			// No Variants any more: every view gets the plain resource.
			{apply: []ResourceUpdate{set("a", 3)}, held: 0, want: map[string][]string{
				"A": {"a@3"}, "C": {"a@3"}}},
		}},
		{"a view that loses its last subscriber drops its variant", []vstep{
			{open: "A", view: z1, sub: []string{"a", "b"}, want: map[string][]string{"A": {"a@empty", "b@empty"}}},
			{open: "B", view: z1, sub: []string{"a"}, want: map[string][]string{"B": {"a@empty"}}},
			{open: "C", view: z2, sub: []string{"a"}, want: map[string][]string{"C": {"a@empty"}}},
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1, "z2": 1}), f.vset("b", 1, map[string]int{"z1": 1})}, builds: 3, held: 3, want: map[string][]string{
				"A": {"a@1/zone:z1", "b@1/zone:z1"}, "B": {"a@1/zone:z1"}, "C": {"a@1/zone:z2"}}},
			{close: "B", held: 3},
			{update: "A", unsub: []string{"a"}, held: 2},
			{update: "A", sub: []string{"a"}, builds: 1, held: 3, want: map[string][]string{"A": {"a@1/zone:z1"}}},
			{close: "A", held: 1},
			{close: "C", held: 0},
			// Nobody subscribed: a change builds nothing.
			{apply: []ResourceUpdate{f.vset("a", 2, map[string]int{"z1": 2, "z2": 2})}, builds: 0, held: 0},
			// A view subscribing later has its variant built then, once.
			{open: "D", view: z2, sub: []string{"a"}, builds: 1, held: 1, want: map[string][]string{"D": {"a@2/zone:z2"}}},
			{open: "E", view: z2, sub: []string{"a"}, builds: 0, held: 1, want: map[string][]string{"E": {"a@2/zone:z2"}}},
		}},
		{"wildcard with a view", []vstep{
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1}), set("b", 1)}, builds: 0, held: 0},
			{open: "W", view: z1, sub: []string{Wildcard}, builds: 1, held: 1, want: map[string][]string{"W": {"a@1/zone:z1", "b@1"}}},
			{open: "X", view: z1, sub: []string{Wildcard, "a"}, builds: 0, held: 1, want: map[string][]string{"X": {"a@1/zone:z1", "b@1"}}},
			{open: "V", view: z3, sub: []string{Wildcard}, held: 1, want: map[string][]string{"V": {"a@1", "b@1"}}},
			{apply: []ResourceUpdate{f.vset("b", 1, map[string]int{"z1": 1, "z3": 1})}, builds: 2, held: 3, want: map[string][]string{
				"W": {"b@1/zone:z1"}, "X": {"b@1/zone:z1"}, "V": {"b@1/zone:z3"}}},
			{close: "W", held: 3},
			// X still names a, so z1 keeps a's variant; b's goes with the wildcard.
			{update: "X", unsub: []string{Wildcard}, held: 2, want: map[string][]string{}},
			{update: "X", unsub: []string{"a"}, held: 1},
			{apply: []ResourceUpdate{del("b")}, held: 0, want: map[string][]string{"V": {"-b"}}},
		}},
		{"a deleted name is served its stand-in in every view", []vstep{
			{open: "A", view: z1, sub: []string{"a"}, want: map[string][]string{"A": {"a@empty"}}},
			{open: "D", sub: []string{"a"}, want: map[string][]string{"D": {"a@empty"}}},
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1})}, builds: 1, held: 1, want: map[string][]string{
				"A": {"a@1/zone:z1"}, "D": {"a@1"}}},
			{apply: []ResourceUpdate{del("a")}, held: 0, want: map[string][]string{"A": {"a@empty"}, "D": {"a@empty"}}},
			{apply: []ResourceUpdate{f.vset("a", 2, map[string]int{"z1": 2})}, builds: 1, held: 1, want: map[string][]string{
				"A": {"a@2/zone:z1"}, "D": {"a@2"}}},
		}},
		{"declared versions: the variant's version is not resent, the plain one is corrected", []vstep{
			{apply: []ResourceUpdate{f.vset("a", 1, map[string]int{"z1": 1}), f.vset("b", 1, map[string]int{"z1": 1})}, held: 0},
			{open: "A", view: z1, sub: []string{"a", "b"}, declared: map[string]string{
				"a": zoneVersion(t, "a", 1, "zone:z1"), "b": versionOf(t, "b", 1)},
				builds: 2, held: 2, want: map[string][]string{"A": {"b@1/zone:z1"}}},
			{open: "D", sub: []string{"a"}, declared: map[string]string{"a": versionOf(t, "a", 1)}, held: 2, woken: []string{"D"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.RegisterType(claType, emptyCLA)
			s.MarkSynced()
			type stream struct {
				sub    *Subscription
				notify chan struct{}
			}
			streams := map[string]*stream{}
			defer func() {
				for _, st := range streams {
					st.sub.Close()
				}
			}()
			for i, step := range tc.steps {
				before := f.builds.Load()
				var built int
				switch {
				case step.apply != nil:
					res, err := s.Apply(claType, step.apply)
					if err != nil {
						t.Fatalf("step %d: Apply: %v", i, err)
					}
					built = res.VariantsBuilt
				case step.open != "":
					st := &stream{notify: make(chan struct{}, 1)}
					st.sub = s.SubscribeView(claType, step.view, st.notify, 0)
					streams[step.open] = st
					if err := st.sub.Update(SubscriptionChange{Subscribe: step.sub, InitialVersions: step.declared}); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					built = -1
				case step.update != "":
					if err := streams[step.update].sub.Update(SubscriptionChange{Subscribe: step.sub, Unsubscribe: step.unsub}); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					built = -1
				case step.close != "":
					streams[step.close].sub.Close()
					delete(streams, step.close)
					built = -1
				}
				if got := int(f.builds.Load() - before); got != step.builds {
					t.Errorf("step %d: %d variants built, want %d", i, got, step.builds)
				}
				if built >= 0 && built != step.builds {
					t.Errorf("step %d: ApplyResult.VariantsBuilt %d, want %d", i, built, step.builds)
				}
				if held, _ := s.VariantStats(claType); held != step.held {
					t.Errorf("step %d: %d variants held, want %d", i, held, step.held)
				}
				for id, st := range streams {
					wantWoken := len(step.want[id]) > 0 || slices.Contains(step.woken, id)
					if w := woken(st.notify); w != wantWoken {
						t.Errorf("step %d: stream %s woken %v, want %v", i, id, w, wantWoken)
					}
					b := st.sub.Next(0)
					var got []string
					for _, r := range b.Resources {
						got = append(got, vlabel(t, r))
					}
					for _, n := range b.Removed {
						got = append(got, "-"+n)
					}
					if !slices.Equal(got, step.want[id]) {
						t.Errorf("step %d: stream %s got %q, want %q", i, id, got, step.want[id])
					}
				}
			}
		})
	}
}

// zoneVersion is the version of a zone variant's content.
func zoneVersion(t testing.TB, name string, gen int, key string) string {
	t.Helper()
	r, err := NewResource(name, claType, zoneCLA(name, gen, key))
	if err != nil {
		t.Fatal(err)
	}
	return r.Version
}

// TestVariantSharedAndReplicaSwitch: two streams at one view are handed the
// same serialized variant, built once; a client switching to another replica
// holding equal content, declaring the versions it holds, is resent nothing,
// whatever its view.
func TestVariantSharedAndReplicaSwitch(t *testing.T) {
	f := &viewsFixture{}
	zones := map[string]int{"z1": 1, "z2": 2}
	views := []View{{}, {Zone: "z1"}, {Zone: "z2", Node: "n7"}, {Zone: "z3"}}
	replica := func() *Store {
		s := NewStore()
		s.RegisterType(claType, emptyCLA)
		mustApply(t, s, f.vset("a", 1, zones), f.vset("b", 1, map[string]int{"z2": 1}), set("c", 1))
		s.MarkSynced()
		return s
	}
	first, second := replica(), replica()
	builds := f.builds.Load()

	names := []string{"a", "b", "c", "missing"}
	for _, v := range views {
		var batches [2]Batch
		for i := range batches {
			sub := first.SubscribeView(claType, v, make(chan struct{}, 1), 0)
			defer sub.Close()
			if err := sub.Update(SubscriptionChange{Subscribe: names}); err != nil {
				t.Fatal(err)
			}
			batches[i] = sub.Next(0)
		}
		if len(batches[0].Resources) != len(names) {
			t.Fatalf("view %v: got %d resources, want %d", v, len(batches[0].Resources), len(names))
		}
		held := map[string]string{}
		for i, r := range batches[0].Resources {
			if batches[1].Resources[i] != r {
				t.Errorf("view %v: two streams got different *Resource for %s", v, r.Name)
			}
			held[r.Name] = r.Version
		}
		t.Logf("view %v: %v", v, func() (out []string) {
			for _, r := range batches[0].Resources {
				out = append(out, vlabel(t, r))
			}
			return out
		}())

		// The replica switch: same view, declared versions.
		sub := second.SubscribeView(claType, v, make(chan struct{}, 1), 0)
		defer sub.Close()
		if err := sub.Update(SubscriptionChange{Subscribe: names, InitialVersions: held}); err != nil {
			t.Fatal(err)
		}
		if b := sub.Next(0); !b.Empty() {
			t.Errorf("view %v: after a replica switch, resent %d resources, %d removals", v, len(b.Resources), len(b.Removed))
		}
	}
	// z1: a; z2: a and b; each on two replicas.
	if got := f.builds.Load() - builds; got != 6 {
		t.Errorf("%d variants built for the subscriptions, want 6 (3 per replica)", got)
	}
}
