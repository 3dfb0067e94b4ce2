package xds

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
)

// emptyVersion stands for the stand-in's version in the tables below.
const emptyVersion = "<empty>"

// got renders a batch as "name@version" (the stand-in as name@<empty>) and
// removals as "-name".
func got(t *testing.T, b Batch) []string {
	t.Helper()
	var out []string
	for _, r := range b.Resources {
		if r.Version == standInVersion(t, r.Name) {
			out = append(out, r.Name+"@"+emptyVersion)
			continue
		}
		out = append(out, label(t, r.Name, r.Version))
	}
	for _, n := range b.Removed {
		out = append(out, "-"+n)
	}
	return out
}

// TestStandIns: a name subscribed by name that has no resource is served as
// the type's stand-in (deltaeds: an empty CLA), never as a bare removal,
// whatever the client holds; wildcard subscriptions still get removals.
func TestStandIns(t *testing.T) {
	type op struct {
		apply  []ResourceUpdate
		change *SubscriptionChange
		want   []string // the next batch
	}
	sub := func(names ...string) *SubscriptionChange { return &SubscriptionChange{Subscribe: names} }
	tests := []struct {
		name string
		ops  []op
	}{
		{"deleted while connected", []op{
			{apply: []ResourceUpdate{set("a", 1)}, change: sub("a"), want: []string{"a@1"}},
			{apply: []ResourceUpdate{del("a")}, want: []string{"a@" + emptyVersion}},
			{want: nil},
		}},
		{"deleted while a response is unacknowledged", []op{
			{apply: []ResourceUpdate{set("a", 1)}, change: sub("a"), want: []string{"a@1"}},
			{apply: []ResourceUpdate{set("a", 2)}, want: []string{"a@2"}},
			// The change and the deletion land before the ACK: the client
			// must still end empty, not with a removal.
			{apply: []ResourceUpdate{set("a", 3), del("a")}, want: []string{"a@" + emptyVersion}},
		}},
		{"never existed, then appears", []op{
			{change: sub("typo"), want: []string{"typo@" + emptyVersion}},
			{apply: []ResourceUpdate{set("typo", 1)}, want: []string{"typo@1"}},
		}},
		{"reconnect declaring a deleted resource", []op{
			{change: &SubscriptionChange{Subscribe: []string{"a"}, InitialVersions: map[string]string{"a": "old-version"}},
				want: []string{"a@" + emptyVersion}},
		}},
		{"reconnect declaring the stand-in resends nothing", []op{
			{change: &SubscriptionChange{Subscribe: []string{"a"}, InitialVersions: map[string]string{"a": emptyVersion}}, want: nil},
		}},
		{"declared first, subscribed later, stale", []op{
			{apply: []ResourceUpdate{set("a", 2)}, change: &SubscriptionChange{Subscribe: []string{"b"}, InitialVersions: map[string]string{"a": "gen1"}},
				want: []string{"b@" + emptyVersion}},
			{change: sub("a"), want: []string{"a@2"}},
		}},
		{"declared first, subscribed later, current", []op{
			{apply: []ResourceUpdate{set("a", 2)}, change: &SubscriptionChange{Subscribe: []string{"b"}, InitialVersions: map[string]string{"a": "gen2"}},
				want: []string{"b@" + emptyVersion}},
			{change: sub("a"), want: nil},
		}},
		{"wildcard subscribers get removals", []op{
			{apply: []ResourceUpdate{set("a", 1)}, change: sub(Wildcard), want: []string{"a@1"}},
			{apply: []ResourceUpdate{del("a")}, want: []string{"-a"}},
		}},
		{"wildcard and named: the name gets the stand-in", []op{
			{apply: []ResourceUpdate{set("a", 1), set("b", 1)}, change: sub(Wildcard, "a"), want: []string{"a@1", "b@1"}},
			{apply: []ResourceUpdate{del("a"), del("b")}, want: []string{"a@" + emptyVersion, "-b"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore()
			s.RegisterType(claType, emptyCLA)
			s.MarkSynced()
			notify := make(chan struct{}, 1)
			sb := s.Subscribe(claType, notify, 0)
			defer sb.Close()
			for i, o := range tt.ops {
				if _, err := s.Apply(claType, o.apply); err != nil {
					t.Fatal(err)
				}
				if c := o.change; c != nil {
					for n, v := range c.InitialVersions {
						switch v {
						case emptyVersion:
							c.InitialVersions[n] = standInVersion(t, n)
						case "gen1", "gen2":
							c.InitialVersions[n] = versionOf(t, n, int(v[3]-'0'))
						}
					}
					if err := sb.Update(*c); err != nil {
						t.Fatal(err)
					}
				}
				if g := got(t, sb.Next(0)); !slices.Equal(g, o.want) {
					t.Fatalf("op %d: Next = %v, want %v", i, g, o.want)
				}
			}
		})
	}
}

// TestStandInIsShared: the stand-in is built once per name, shared by every
// subscriber, equal across stores (replicas), and dropped with the last
// subscriber that names it.
func TestStandInIsShared(t *testing.T) {
	var builds int
	s := NewStore()
	s.RegisterType(claType, func(name string) proto.Message { builds++; return emptyCLA(name) })
	s.MarkSynced()
	subs := make([]*Subscription, 3)
	var first *Resource
	for i := range subs {
		subs[i] = s.Subscribe(claType, make(chan struct{}, 1), 0)
		if err := subs[i].Update(SubscriptionChange{Subscribe: []string{"gone"}}); err != nil {
			t.Fatal(err)
		}
		b := subs[i].Next(0)
		if len(b.Resources) != 1 {
			t.Fatalf("subscriber %d got %v", i, got(t, b))
		}
		if first == nil {
			first = b.Resources[0]
		} else if b.Resources[0] != first {
			t.Errorf("subscriber %d got its own stand-in: serialized per subscriber", i)
		}
	}
	if builds != 1 {
		t.Errorf("stand-in built %d times for 3 subscribers, want 1", builds)
	}
	if first.Version != standInVersion(t, "gone") {
		t.Errorf("stand-in version %s differs from a fresh store's %s", first.Version, standInVersion(t, "gone"))
	}
	for _, sb := range subs {
		sb.Close()
	}
	if n := len(s.typeFor(claType).stand); n != 0 {
		t.Errorf("%d stand-ins kept after the last subscriber left", n)
	}
}

// TestRejectedIsolates: after a NACK of a response of several resources,
// each is sent again alone, at most once, taking turns with fresh changes;
// one rejected alone is not resent until it changes.
func TestRejectedIsolates(t *testing.T) {
	s := NewStore()
	s.RegisterType(claType, emptyCLA)
	s.MarkSynced()
	notify := make(chan struct{}, 1)
	sb := s.Subscribe(claType, notify, 0)
	defer sb.Close()
	if _, err := s.Apply(claType, []ResourceUpdate{set("a", 1), set("b", 1), set("c", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Update(SubscriptionChange{Subscribe: []string{"a", "b", "c", "d"}}); err != nil {
		t.Fatal(err)
	}
	first := sb.Next(0)
	if g := got(t, first); !slices.Equal(g, []string{"a@1", "b@1", "c@1", "d@" + emptyVersion}) {
		t.Fatalf("first batch %v", g)
	}
	if n := sb.Rejected(resourceNames(first.Resources)); n != 4 {
		t.Fatalf("Rejected queued %d, want 4", n)
	}
	if !woken(notify) {
		t.Fatal("Rejected did not wake the stream")
	}
	// A fresh change arrives meanwhile: resends and changes take turns.
	if _, err := s.Apply(claType, []ResourceUpdate{set("c", 2)}); err != nil {
		t.Fatal(err)
	}
	var seq [][]string
	for range 10 {
		b := sb.Next(0)
		if b.Empty() {
			break
		}
		seq = append(seq, got(t, b))
		if len(b.Resources) == 1 && b.Resources[0].Name == "b" {
			if n := sb.Rejected(resourceNames(b.Resources)); n != 0 {
				t.Fatalf("a resource rejected alone was queued again (%d)", n)
			}
		}
	}
	want := [][]string{{"a@1"}, {"b@1"}, {"c@2"}, {"d@" + emptyVersion}}
	if !slices.EqualFunc(seq, want, slices.Equal) {
		t.Fatalf("after the NACK: %v, want %v", seq, want)
	}
	if b := sb.Next(0); !b.Empty() {
		t.Fatalf("b resent after being rejected alone: %v", got(t, b))
	}
	if _, err := s.Apply(claType, []ResourceUpdate{set("b", 2)}); err != nil {
		t.Fatal(err)
	}
	if g := got(t, sb.Next(0)); !slices.Equal(g, []string{"b@2"}) {
		t.Fatalf("b's next change: %v", g)
	}
}

// TestRemovalBudget: removal-only batches respect the byte budget too.
func TestRemovalBudget(t *testing.T) {
	s := NewStore()
	s.RegisterType(claType, nil)
	s.MarkSynced()
	sb := s.Subscribe(claType, make(chan struct{}, 1), 0)
	defer sb.Close()
	names := []string{"n0", "n1", "n2", "n3", "n4", "n5"}
	if err := sb.Update(SubscriptionChange{Subscribe: names}); err != nil {
		t.Fatal(err)
	}
	total := 0
	for range names {
		b := sb.Next(9) // two removals of 4 bytes each fit, not three
		if len(b.Resources) != 0 || len(b.Removed) > 2 || len(b.Removed) == 0 {
			t.Fatalf("batch %v %v over a 9-byte budget", resourceNames(b.Resources), b.Removed)
		}
		total += len(b.Removed)
		if total == len(names) {
			break
		}
	}
	if total != len(names) {
		t.Fatalf("%d removals, want %d", total, len(names))
	}
}
