package xds

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// claType is the type URL every test stores its ClusterLoadAssignments under.
const claType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

// testEndpoints is the number of endpoints of the CLAs the table tests use.
const testEndpoints = 3

// newCLA returns a ClusterLoadAssignment for a cluster with n endpoints. Its
// content is a function of (name, gen, n) only: gen moves every endpoint's
// port, so two generations of one name always differ.
func newCLA(name string, gen, n int) *endpointv3.ClusterLoadAssignment {
	lbs := make([]*endpointv3.LbEndpoint, n)
	for i := range lbs {
		lbs[i] = &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(8000 + gen)},
				}}},
			}},
		}
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:    &corev3.Locality{Region: "r1", Zone: "z1"},
			LbEndpoints: lbs,
		}},
	}
}

// set is a ResourceUpdate setting name to generation gen of its test content.
func set(name string, gen int) ResourceUpdate {
	return ResourceUpdate{Name: name, Message: newCLA(name, gen, testEndpoints)}
}

// del is a ResourceUpdate deleting name.
func del(name string) ResourceUpdate { return ResourceUpdate{Name: name} }

var (
	versionsMu sync.Mutex
	versions   = map[string]string{} // "name@gen" -> version
	gens       = map[string]string{} // "name@version" -> "name@gen"
)

// versionOf returns the version generation gen of name's test content has,
// computed without any Store.
func versionOf(t testing.TB, name string, gen int) string {
	t.Helper()
	key := fmt.Sprintf("%s@%d", name, gen)
	versionsMu.Lock()
	defer versionsMu.Unlock()
	if v, ok := versions[key]; ok {
		return v
	}
	r, err := NewResource(name, claType, newCLA(name, gen, testEndpoints))
	if err != nil {
		t.Fatalf("NewResource(%s): %v", key, err)
	}
	versions[key] = r.Version
	gens[name+"@"+r.Version] = key
	return r.Version
}

// label renders a resource as "name@gen" when its version is one of the first
// generations of the test content, and as "name@?version" otherwise.
func label(t testing.TB, name, version string) string {
	t.Helper()
	for gen := 0; gen < 16; gen++ {
		versionOf(t, name, gen)
	}
	versionsMu.Lock()
	defer versionsMu.Unlock()
	if l, ok := gens[name+"@"+version]; ok {
		return l
	}
	return name + "@?" + version
}

// labels renders a batch's resources with label.
func labels(t testing.TB, rs []*Resource) []string {
	t.Helper()
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, label(t, r.Name, r.Version))
	}
	return out
}

// storeLabels renders the whole content of the store, sorted by name.
func storeLabels(t testing.TB, s *Store) []string {
	t.Helper()
	return labels(t, s.List(claType))
}

// woken reports whether ch holds a wake-up, and consumes it.
func woken(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func mustApply(t testing.TB, s *Store, updates ...ResourceUpdate) ApplyResult {
	t.Helper()
	ch, err := s.Apply(claType, updates)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return ch
}

// TestVersionIsContentHash: equal content has an equal version, wherever and
// whenever it is stored; different content a different one.
func TestVersionIsContentHash(t *testing.T) {
	named := func(order ...string) *endpointv3.ClusterLoadAssignment {
		m := newCLA("a", 1, 2)
		m.NamedEndpoints = make(map[string]*endpointv3.Endpoint)
		for _, k := range order {
			m.NamedEndpoints[k] = &endpointv3.Endpoint{Hostname: "host-" + k}
		}
		return m
	}
	tests := []struct {
		name string
		a, b proto.Message
		same bool
	}{
		{"same content, distinct messages", newCLA("a", 1, 10), newCLA("a", 1, 10), true},
		{"map fields built in different orders", named("x", "y", "z", "w", "v"), named("v", "w", "z", "y", "x"), true},
		{"clone", newCLA("a", 7, 5), proto.Clone(newCLA("a", 7, 5)), true},
		{"one port differs", newCLA("a", 1, 10), newCLA("a", 2, 10), false},
		{"one endpoint more", newCLA("a", 1, 10), newCLA("a", 1, 11), false},
		{"cluster name differs", newCLA("a", 1, 10), newCLA("b", 1, 10), false},
		{"empty vs one endpoint", &endpointv3.ClusterLoadAssignment{ClusterName: "a"}, newCLA("a", 0, 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Two stores stand for two replicas, or one before and after a
			// restart: they are set in different orders, among other names.
			s1, s2 := NewStore(), NewStore()
			if _, err := s1.Apply(claType, []ResourceUpdate{{Name: "x", Message: tc.a}, set("other", 1)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Apply(claType, []ResourceUpdate{set("other", 2)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Apply(claType, []ResourceUpdate{{Name: "x", Message: tc.b}}); err != nil {
				t.Fatal(err)
			}
			v1, v2 := s1.Get(claType, "x").Version, s2.Get(claType, "x").Version
			if v1 == "" || v2 == "" {
				t.Fatalf("empty version: %q %q", v1, v2)
			}
			if (v1 == v2) != tc.same {
				t.Errorf("versions %q and %q: equal=%v, want %v", v1, v2, v1 == v2, tc.same)
			}
			// The version is a function of the content only: NewResource
			// agrees with Apply, again and again.
			for i := 0; i < 20; i++ {
				r, err := NewResource("x", claType, tc.a)
				if err != nil {
					t.Fatal(err)
				}
				if r.Version != v1 {
					t.Fatalf("NewResource attempt %d: version %q, Apply gave %q", i, r.Version, v1)
				}
			}
		})
	}
}

// TestVersionGolden pins the version of one fixed CLA, so a change to the
// hashing (which would make every upgraded replica resend everything to every
// client) is a deliberate one.
func TestVersionGolden(t *testing.T) {
	r, err := NewResource("golden", claType, newCLA("golden", 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	const want = "YVJrcd_RBHcZaASGLq-6-w"
	if r.Version != want {
		t.Errorf("version of the golden CLA = %q, want %q", r.Version, want)
	}
}

// TestNewResourceWire checks what a Resource carries to the wire.
func TestNewResourceWire(t *testing.T) {
	m := newCLA("a", 3, 4)
	r, err := NewResource("a", claType, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "a" || r.Wire.GetName() != "a" {
		t.Errorf("names: %q / wire %q", r.Name, r.Wire.GetName())
	}
	if r.Wire.GetVersion() != r.Version {
		t.Errorf("wire version %q != version %q", r.Wire.GetVersion(), r.Version)
	}
	if got := r.Wire.GetResource().GetTypeUrl(); got != claType {
		t.Errorf("type URL %q", got)
	}
	// WireSize is what the resource adds to a response: the message plus
	// its field tag and length (TestFramedIsTheResponseEncoding checks the
	// bytes themselves).
	if size := proto.Size(r.Wire); r.WireSize != size+protowire.SizeTag(2)+protowire.SizeVarint(uint64(size)) {
		t.Errorf("WireSize %d, proto.Size %d", r.WireSize, size)
	}
	var back endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(r.Wire.GetResource().GetValue(), &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, m) {
		t.Errorf("round trip differs: %v", &back)
	}
}

// TestApplyChanges walks one store through a sequence of batches and checks
// what each reports and what the store holds after it.
func TestApplyChanges(t *testing.T) {
	type step struct {
		updates []ResourceUpdate
		want    ApplyResult // Notified is not checked here: there is no subscription
		content []string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"set new names", []step{
			{[]ResourceUpdate{set("a", 1), set("b", 1)}, ApplyResult{Set: 2}, []string{"a@1", "b@1"}},
		}},
		{"identical content is a no-op", []step{
			{[]ResourceUpdate{set("a", 1)}, ApplyResult{Set: 1}, []string{"a@1"}},
			{[]ResourceUpdate{set("a", 1)}, ApplyResult{Unchanged: 1}, []string{"a@1"}},
		}},
		{"changed content gets a new version", []step{
			{[]ResourceUpdate{set("a", 1)}, ApplyResult{Set: 1}, []string{"a@1"}},
			{[]ResourceUpdate{set("a", 2)}, ApplyResult{Set: 1}, []string{"a@2"}},
			{[]ResourceUpdate{set("a", 1)}, ApplyResult{Set: 1}, []string{"a@1"}},
		}},
		{"delete existing and missing", []step{
			{[]ResourceUpdate{set("a", 1), set("b", 1)}, ApplyResult{Set: 2}, []string{"a@1", "b@1"}},
			{[]ResourceUpdate{del("a"), del("zzz")}, ApplyResult{Deleted: 1, Unchanged: 1}, []string{"b@1"}},
			{[]ResourceUpdate{del("a")}, ApplyResult{Unchanged: 1}, []string{"b@1"}},
		}},
		{"mixed batch", []step{
			{[]ResourceUpdate{set("a", 1), set("b", 1), set("c", 1)}, ApplyResult{Set: 3}, []string{"a@1", "b@1", "c@1"}},
			{[]ResourceUpdate{set("a", 1), set("b", 2), del("c"), set("d", 1), del("e")}, ApplyResult{Set: 2, Deleted: 1, Unchanged: 2}, []string{"a@1", "b@2", "d@1"}},
		}},
		{"last update of a name wins", []step{
			{[]ResourceUpdate{set("a", 1), set("a", 2), set("a", 3)}, ApplyResult{Set: 1}, []string{"a@3"}},
			{[]ResourceUpdate{set("a", 4), del("a")}, ApplyResult{Deleted: 1}, nil},
			{[]ResourceUpdate{del("a"), set("a", 5)}, ApplyResult{Set: 1}, []string{"a@5"}},
			{[]ResourceUpdate{set("a", 6), set("a", 5)}, ApplyResult{Unchanged: 1}, []string{"a@5"}},
		}},
		{"empty batch", []step{
			{nil, ApplyResult{}, nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			for i, st := range tc.steps {
				got := mustApply(t, s, st.updates...)
				if got != st.want {
					t.Errorf("step %d: ApplyResult %+v, want %+v", i, got, st.want)
				}
				if content := storeLabels(t, s); !slices.Equal(content, st.content) {
					t.Errorf("step %d: store %v, want %v", i, content, st.content)
				}
				if n := s.Len(claType); n != len(st.content) {
					t.Errorf("step %d: Len %d, want %d", i, n, len(st.content))
				}
				names := s.Names(claType)
				sort.Strings(names)
				var want []string
				for _, l := range st.content {
					want = append(want, strings.SplitN(l, "@", 2)[0])
				}
				if !slices.Equal(names, want) {
					t.Errorf("step %d: Names %v, want %v", i, names, want)
				}
			}
		})
	}
}

// TestApplyUnchangedKeepsResource: a no-op Apply keeps the very Resource that
// was stored, with its version and its ObservedAt.
func TestApplyUnchangedKeepsResource(t *testing.T) {
	s := NewStore()
	t0 := time.Unix(1000, 0)
	if _, err := s.Apply(claType, []ResourceUpdate{{Name: "a", Message: newCLA("a", 1, 3), ObservedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	before := s.Get(claType, "a")
	if !before.ObservedAt.Equal(t0) {
		t.Errorf("ObservedAt %v, want %v", before.ObservedAt, t0)
	}
	ch, err := s.Apply(claType, []ResourceUpdate{{Name: "a", Message: newCLA("a", 1, 3), ObservedAt: t0.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if ch != (ApplyResult{Unchanged: 1}) {
		t.Errorf("Changes %+v", ch)
	}
	if after := s.Get(claType, "a"); after != before {
		t.Errorf("a no-op Apply replaced the stored resource: %p -> %p", before, after)
	}
}

// TestApplyMarshalError: a message that cannot be marshaled is reported and
// skipped, and the rest of the batch applied.
func TestApplyMarshalError(t *testing.T) {
	s := NewStore()
	mustApply(t, s, set("bad", 1))
	bad := newCLA("bad", 2, 1)
	bad.ClusterName = "\xff\xfe not UTF-8" // proto3 strings must be valid UTF-8
	ch, err := s.Apply(claType, []ResourceUpdate{set("a", 1), {Name: "bad", Message: bad}, del("zzz")})
	if err == nil {
		t.Fatal("Apply of an invalid message returned no error")
	}
	if !strings.Contains(err.Error(), "bad") {
		t.Errorf("error does not name the resource: %v", err)
	}
	if ch != (ApplyResult{Set: 1, Unchanged: 1}) {
		t.Errorf("Changes %+v, want Set 1, Unchanged 1", ch)
	}
	if got, want := storeLabels(t, s), []string{"a@1", "bad@1"}; !slices.Equal(got, want) {
		t.Errorf("store %v, want %v", got, want)
	}
}

// TestApplyNotifiesOnlyChangedNames: an update wakes the subscriptions of the
// names it changed and the wildcard subscriptions, and nothing else.
func TestApplyNotifiesOnlyChangedNames(t *testing.T) {
	subs := map[string][]string{ // subscription -> its names
		"A":    {"a"},
		"B":    {"b"},
		"AB":   {"a", "b"},
		"C":    {"c"},
		"W":    {Wildcard},
		"WA":   {Wildcard, "a"},
		"none": nil,
	}
	tests := []struct {
		name    string
		updates []ResourceUpdate
		want    ApplyResult
		woken   []string // sorted
	}{
		{"change a", []ResourceUpdate{set("a", 2)}, ApplyResult{Set: 1, Notified: 4}, []string{"A", "AB", "W", "WA"}},
		{"change b", []ResourceUpdate{set("b", 2)}, ApplyResult{Set: 1, Notified: 4}, []string{"AB", "B", "W", "WA"}},
		{"change a and b", []ResourceUpdate{set("a", 2), set("b", 2)}, ApplyResult{Set: 2, Notified: 5}, []string{"A", "AB", "B", "W", "WA"}},
		{"create c", []ResourceUpdate{set("c", 1)}, ApplyResult{Set: 1, Notified: 3}, []string{"C", "W", "WA"}},
		{"delete a", []ResourceUpdate{del("a")}, ApplyResult{Deleted: 1, Notified: 4}, []string{"A", "AB", "W", "WA"}},
		{"change a name nobody names", []ResourceUpdate{set("x", 2)}, ApplyResult{Set: 1, Notified: 2}, []string{"W", "WA"}},
		{"identical content", []ResourceUpdate{set("a", 1), set("b", 1), set("x", 1)}, ApplyResult{Unchanged: 3}, nil},
		{"delete a missing name", []ResourceUpdate{del("c"), del("y")}, ApplyResult{Unchanged: 2}, nil},
		{"identical a, changed c", []ResourceUpdate{set("a", 1), set("c", 1)}, ApplyResult{Set: 1, Unchanged: 1, Notified: 3}, []string{"C", "W", "WA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			mustApply(t, s, set("a", 1), set("b", 1), set("x", 1))
			s.MarkSynced()
			chans := map[string]chan struct{}{}
			for name, names := range subs {
				ch := make(chan struct{}, 1)
				chans[name] = ch
				sub := s.Subscribe(claType, ch, 0)
				if err := sub.Update(SubscriptionChange{Subscribe: names}); err != nil {
					t.Fatal(err)
				}
				for !sub.Next(0).Empty() {
				}
				woken(ch)
			}
			got := mustApply(t, s, tc.updates...)
			if got != tc.want {
				t.Errorf("Changes %+v, want %+v", got, tc.want)
			}
			var gotWoken []string
			for name, ch := range chans {
				if woken(ch) {
					gotWoken = append(gotWoken, name)
				}
			}
			sort.Strings(gotWoken)
			if !slices.Equal(gotWoken, tc.woken) {
				t.Errorf("woken %v, want %v", gotWoken, tc.woken)
			}
		})
	}
}

// TestApplySerializesOncePerChange: every subscription receives the very
// Resource (and wire message) the store holds; nothing is marshaled per
// subscriber.
func TestApplySerializesOncePerChange(t *testing.T) {
	for _, n := range []int{1, 2, 10, 100} {
		t.Run(fmt.Sprintf("subscriptions=%d", n), func(t *testing.T) {
			s := NewStore()
			s.MarkSynced()
			var subs []*Subscription
			for i := 0; i < n; i++ {
				names := []string{"a"}
				if i%3 == 1 {
					names = []string{Wildcard}
				}
				if i%3 == 2 {
					names = []string{"a", Wildcard}
				}
				sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
				if err := sub.Update(SubscriptionChange{Subscribe: names}); err != nil {
					t.Fatal(err)
				}
				sub.Next(0)
				subs = append(subs, sub)
			}
			for gen := 1; gen <= 3; gen++ {
				mustApply(t, s, set("a", gen))
				stored := s.Get(claType, "a")
				resources := map[*Resource]bool{}
				wires := map[any]bool{}
				for i, sub := range subs {
					b := sub.Next(0)
					if len(b.Resources) != 1 {
						t.Fatalf("gen %d sub %d: %d resources", gen, i, len(b.Resources))
					}
					r := b.Resources[0]
					resources[r] = true
					wires[r.Wire] = true
					if r != stored {
						t.Errorf("gen %d sub %d: got %p, store holds %p", gen, i, r, stored)
					}
				}
				if len(resources) != 1 || len(wires) != 1 {
					t.Errorf("gen %d: %d distinct *Resource and %d distinct wire messages for one change to %d subscriptions, want 1 and 1",
						gen, len(resources), len(wires), n)
				}
			}
		})
	}
}

// TestMarkSynced: before the store is synced Next answers nothing and keeps
// everything pending; MarkSynced wakes every subscription, once.
func TestMarkSynced(t *testing.T) {
	s := NewStore()
	if s.Synced() {
		t.Fatal("a new store is synced")
	}
	mustApply(t, s, set("a", 1))
	type stream struct {
		ch  chan struct{}
		sub *Subscription
	}
	var streams []stream
	for _, names := range [][]string{{"a"}, {"missing"}, {Wildcard}, {"a", "b"}} {
		ch := make(chan struct{}, 1)
		sub := s.Subscribe(claType, ch, 0)
		if err := sub.Update(SubscriptionChange{Subscribe: names}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, stream{ch, sub})
	}
	mustApply(t, s, set("b", 1), set("a", 2))
	for i, st := range streams {
		woken(st.ch)
		for j := 0; j < 3; j++ {
			if b := st.sub.Next(0); !b.Empty() {
				t.Errorf("stream %d: Next before MarkSynced returned %v / %v", i, labels(t, b.Resources), b.Removed)
			}
		}
		if st.sub.Stats().Pending == 0 {
			t.Errorf("stream %d: pending emptied before MarkSynced", i)
		}
	}
	s.MarkSynced()
	if !s.Synced() {
		t.Fatal("Synced() false after MarkSynced")
	}
	wants := []struct {
		res, removed []string
	}{
		{[]string{"a@2"}, nil},
		{nil, []string{"missing"}},
		{[]string{"a@2", "b@1"}, nil},
		{[]string{"a@2", "b@1"}, nil},
	}
	for i, st := range streams {
		if !woken(st.ch) {
			t.Errorf("stream %d not woken by MarkSynced", i)
		}
		b := st.sub.Next(0)
		if got := labels(t, b.Resources); !slices.Equal(got, wants[i].res) || !slices.Equal(b.Removed, wants[i].removed) {
			t.Errorf("stream %d: got %v removed %v, want %v removed %v", i, got, b.Removed, wants[i].res, wants[i].removed)
		}
	}
	s.MarkSynced() // a no-op
	for i, st := range streams {
		if woken(st.ch) {
			t.Errorf("stream %d woken by a second MarkSynced", i)
		}
	}
}

// TestStoreCounts covers the bookkeeping accessors.
func TestStoreCounts(t *testing.T) {
	s := NewStore()
	if s.HasType(claType) {
		t.Fatal("HasType on a new store")
	}
	s.RegisterType(claType, nil)
	if !s.HasType(claType) || s.Len(claType) != 0 {
		t.Fatalf("after RegisterType: HasType %v Len %d", s.HasType(claType), s.Len(claType))
	}
	mustApply(t, s, set("a", 1), set("b", 1))
	s1 := s.Subscribe(claType, make(chan struct{}, 1), 0)
	s2 := s.Subscribe(claType, make(chan struct{}, 1), 0)
	if err := s1.Update(SubscriptionChange{Subscribe: []string{"a", "b", "c"}}); err != nil {
		t.Fatal(err)
	}
	if err := s2.Update(SubscriptionChange{Subscribe: []string{Wildcard, "a"}}); err != nil {
		t.Fatal(err)
	}
	if subs, names := s.SubscriptionCount(claType); subs != 2 || names != 5 {
		t.Errorf("SubscriptionCount = %d, %d; want 2, 5", subs, names)
	}
	if st := s2.Stats(); st != (Stats{TypeURL: claType, Names: 1, Wildcard: true, Pending: 2}) {
		t.Errorf("Stats %+v", st)
	}
	if s1.TypeURL() != claType {
		t.Errorf("TypeURL %q", s1.TypeURL())
	}
	s1.Close()
	if subs, names := s.SubscriptionCount(claType); subs != 1 || names != 2 {
		t.Errorf("after Close: SubscriptionCount = %d, %d; want 1, 2", subs, names)
	}
	s2.Close()
	s2.Close() // idempotent
	if subs, names := s.SubscriptionCount(claType); subs != 0 || names != 0 {
		t.Errorf("after Close: SubscriptionCount = %d, %d; want 0, 0", subs, names)
	}
}

// TestReadsDoNotRegisterType: HasType reports "whether anything of typeURL was
// ever stored" (and RegisterType makes a type served on purpose), so merely
// reading an unknown type must not make it a served one.
func TestReadsDoNotRegisterType(t *testing.T) {
	reads := map[string]func(s *Store, typeURL string){
		"Get":               func(s *Store, u string) { s.Get(u, "x") },
		"Len":               func(s *Store, u string) { s.Len(u) },
		"List":              func(s *Store, u string) { s.List(u) },
		"Names":             func(s *Store, u string) { s.Names(u) },
		"SubscriptionCount": func(s *Store, u string) { s.SubscriptionCount(u) },
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			s := NewStore()
			const unknown = "type.googleapis.com/never.Stored"
			read(s, unknown)
			if s.HasType(unknown) {
				t.Errorf("%s of a type never stored nor registered made HasType true", name)
			}
		})
	}
}
