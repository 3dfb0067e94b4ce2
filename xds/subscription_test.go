package xds

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// simClient is what a delta xDS client holds for one type, rebuilt only from
// the changes it sends and the batches it receives. It also checks, batch by
// batch, that the server never sends anything a correct client would have to
// reject or could not account for.
type simClient struct {
	names    map[string]bool
	wildcard bool
	held     map[string]string // name -> version held
	absent   map[string]bool   // subscribed names the client was told do not exist
	// unsure holds names unsubscribed under the wildcard: the client cannot
	// tell whether the wildcard still covers them, so it drops them and
	// must be sent the resource or its removal (xds_protocol.rst).
	unsure map[string]bool
	// standIn is the store's AbsentFunc: when set, a named subscription is
	// never sent a bare removal, but the stand-in.
	standIn AbsentFunc
	// view is the client's view: it holds each name's variant for it.
	view View
}

func newSimClient() *simClient {
	return &simClient{names: map[string]bool{}, held: map[string]string{}, absent: map[string]bool{}, unsure: map[string]bool{}}
}

// emptyCLA is the stand-in the tests register: what deltaeds serves a
// subscribed name without endpoints as.
func emptyCLA(name string) proto.Message { return &endpointv3.ClusterLoadAssignment{ClusterName: name} }

// standInVersion is the version of emptyCLA(name).
func standInVersion(t testing.TB, name string) string {
	t.Helper()
	r, err := NewResource(name, claType, emptyCLA(name))
	if err != nil {
		t.Fatal(err)
	}
	return r.Version
}

// update records a subscription change the client sent (and the server
// accepted). A client forgets what it unsubscribes from, and what it
// subscribes to again while subscribed.
func (c *simClient) update(ch SubscriptionChange) {
	for n, v := range ch.InitialVersions {
		c.held[n] = v
	}
	wildcardOff := false
	for _, n := range ch.Unsubscribe {
		if n == Wildcard {
			wildcardOff = true
			continue
		}
		if !c.names[n] {
			continue
		}
		delete(c.names, n)
		delete(c.held, n)
		delete(c.absent, n)
		delete(c.unsure, n)
		if c.wildcard {
			c.unsure[n] = true
		}
	}
	for _, n := range ch.Subscribe {
		if n == Wildcard {
			c.wildcard = true
			wildcardOff = false
			continue
		}
		if _, declared := ch.InitialVersions[n]; c.names[n] && !declared {
			// Naming a subscribed name again means the client dropped it.
			delete(c.held, n)
			delete(c.absent, n)
		}
		c.names[n] = true
	}
	if wildcardOff && c.wildcard {
		c.wildcard = false
		for n := range c.held {
			if !c.names[n] {
				delete(c.held, n)
			}
		}
		for n := range c.absent {
			if !c.names[n] {
				delete(c.absent, n)
			}
		}
		for n := range c.unsure {
			if !c.names[n] {
				delete(c.unsure, n)
			}
		}
	}
}

// apply takes a batch into the client's state. When s is not nil (nothing
// changes the store concurrently) the batch is also checked against it.
func (c *simClient) apply(b Batch, s *Store) error {
	var errs []error
	if !sort.SliceIsSorted(b.Resources, func(i, j int) bool { return b.Resources[i].Name < b.Resources[j].Name }) {
		errs = append(errs, fmt.Errorf("resources not sorted: %v", resourceNames(b.Resources)))
	}
	if !sort.StringsAreSorted(b.Removed) {
		errs = append(errs, fmt.Errorf("removals not sorted: %v", b.Removed))
	}
	seen := map[string]bool{}
	for _, r := range b.Resources {
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s twice in one batch", r.Name))
		}
		seen[r.Name] = true
		if !c.wildcard && !c.names[r.Name] {
			errs = append(errs, fmt.Errorf("sent %s, which is not subscribed", r.Name))
		}
		if v, ok := c.held[r.Name]; ok && v == r.Version {
			errs = append(errs, fmt.Errorf("sent %s at version %s, which the client holds", r.Name, r.Version))
		}
		if r.Wire.GetVersion() != r.Version || r.Wire.GetName() != r.Name {
			errs = append(errs, fmt.Errorf("wire of %s says %s@%s", r.Name, r.Wire.GetName(), r.Wire.GetVersion()))
		}
		if s != nil {
			cur := s.servedTo(r.Name, c.view)
			switch {
			case cur == r:
			case cur == nil && c.standIn != nil && c.names[r.Name]:
				if want, _ := NewResource(r.Name, claType, c.standIn(r.Name)); want.Version != r.Version {
					errs = append(errs, fmt.Errorf("sent %s@%s for an absent name, not the stand-in %s", r.Name, r.Version, want.Version))
				}
			default:
				errs = append(errs, fmt.Errorf("sent %s@%s, the store holds %v", r.Name, r.Version, cur))
			}
		}
		c.held[r.Name] = r.Version
		delete(c.absent, r.Name)
		delete(c.unsure, r.Name)
	}
	for _, n := range b.Removed {
		if seen[n] {
			errs = append(errs, fmt.Errorf("%s both sent and removed", n))
		}
		seen[n] = true
		if s != nil && s.Get(claType, n) != nil {
			errs = append(errs, fmt.Errorf("removed %s, which exists", n))
		}
		switch {
		case c.names[n] && c.standIn != nil:
			errs = append(errs, fmt.Errorf("bare removal of %s, subscribed by name: Envoy would keep routing to it", n))
		case c.names[n]:
			if c.absent[n] {
				errs = append(errs, fmt.Errorf("removal of %s repeated", n))
			}
			c.absent[n] = true
		case c.wildcard:
			if _, ok := c.held[n]; !ok && !c.unsure[n] {
				errs = append(errs, fmt.Errorf("wildcard removal of %s, which the client was never sent", n))
			}
		default:
			errs = append(errs, fmt.Errorf("removal of %s, which is not subscribed", n))
		}
		delete(c.held, n)
		delete(c.unsure, n)
	}
	return errors.Join(errs...)
}

// converged reports how the client differs from the store restricted to its
// subscription: every existing subscribed resource (all of them for a
// wildcard) at its current version, nothing else, and every subscribed name
// that does not exist declared absent.
func (c *simClient) converged(t testing.TB, s *Store) error {
	t.Helper()
	want := map[string]string{}
	if c.wildcard {
		for _, r := range s.List(claType) {
			want[r.Name] = s.servedTo(r.Name, c.view).Version
		}
	}
	var errs []error
	for n := range c.names {
		if r := s.servedTo(n, c.view); r != nil {
			want[n] = r.Version
		} else if c.standIn != nil {
			want[n] = standInVersion(t, n)
		} else if !c.absent[n] {
			errs = append(errs, fmt.Errorf("subscribed %s does not exist and the client was never told", n))
		}
	}
	if !maps.Equal(c.held, want) {
		errs = append(errs, fmt.Errorf("client holds %v, store has %v", c.labels(t), versionLabels(t, want)))
	}
	for n := range c.unsure {
		errs = append(errs, fmt.Errorf("%s unsubscribed under the wildcard and never answered", n))
	}
	return errors.Join(errs...)
}

func (c *simClient) labels(t testing.TB) []string { t.Helper(); return versionLabels(t, c.held) }

func versionLabels(t testing.TB, m map[string]string) []string {
	t.Helper()
	out := []string{}
	for n, v := range m {
		out = append(out, label(t, n, v))
	}
	sort.Strings(out)
	return out
}

func resourceNames(rs []*Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

// drain takes batches until Next answers nothing, applying them to c.
func drain(t testing.TB, sub *Subscription, c *simClient, s *Store, maxBytes int) {
	t.Helper()
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("Next never ran dry")
		}
		b := sub.Next(maxBytes)
		if b.Empty() {
			return
		}
		if err := c.apply(b, s); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
}

type wake int

const (
	wakeAny wake = iota
	wakeYes
	wakeNo
)

// step is one action on a store with one subscription, and what must follow.
type step struct {
	apply   []ResourceUpdate // Store.Apply
	changes *ApplyResult     // what Apply must report

	change  *SubscriptionChange // Subscription.Update
	initial map[string]int      // added to change.InitialVersions: name -> gen, -1 for a version that never existed
	wantErr error               // Update's error

	sync bool // Store.MarkSynced

	next     bool // Subscription.Next
	maxBytes int
	want     []string // resources, "name@gen", sorted
	removed  []string

	close bool // Subscription.Close

	woken  wake     // was the notify channel signalled by the step
	client []string // when not nil, what the client holds after the step, "name@gen"
}

func doApply(w wake, us ...ResourceUpdate) step { return step{apply: us, woken: w} }
func doSub(w wake, names ...string) step {
	return step{change: &SubscriptionChange{Subscribe: names}, woken: w}
}
func doUnsub(w wake, names ...string) step {
	return step{change: &SubscriptionChange{Unsubscribe: names}, woken: w}
}
func doNext(want []string, removed ...string) step {
	return step{next: true, want: want, removed: removed}
}
func doSync() step { return step{sync: true, woken: wakeYes} }

var none []string

// TestNext walks one subscription through scenarios, each step checking the
// batch Next returns, whether the stream was woken and what the client holds.
// Every scenario that leaves its subscription open ends converged.
func TestNext(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"subscribed missing name is removed once", []step{
			doSync(),
			doSub(wakeYes, "a"),
			doNext(none, "a"),
			doNext(none),
			// Created and deleted again before Next: the client already
			// knows it does not exist.
			doApply(wakeYes, set("a", 1)),
			doApply(wakeYes, del("a")),
			doNext(none),
			{apply: []ResourceUpdate{del("a")}, changes: &ApplyResult{Unchanged: 1}, woken: wakeNo},
			doNext(none),
			doApply(wakeYes, set("a", 1)),
			doNext([]string{"a@1"}),
			doApply(wakeYes, del("a")),
			doNext(none, "a"),
			doNext(none),
			{next: true, woken: wakeNo, client: []string{}},
		}},
		{"pending set sends the latest version once", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a", "b"),
			doNext([]string{"a@1"}, "b"),
			doApply(wakeYes, set("a", 2)),
			doApply(wakeYes, set("a", 3)),
			doApply(wakeYes, set("b", 1)),
			doApply(wakeYes, set("a", 4), set("b", 2)),
			doNext([]string{"a@4", "b@2"}),
			doNext(none),
			{woken: wakeNo, client: []string{"a@4", "b@2"}},
		}},
		{"change reverted before Next sends nothing", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a"),
			doNext([]string{"a@1"}),
			doApply(wakeYes, set("a", 2)),
			doApply(wakeYes, set("a", 1)),
			doNext(none),
			doApply(wakeYes, del("a")),
			doApply(wakeYes, set("a", 1)),
			doNext(none),
			{client: []string{"a@1"}},
		}},
		{"identical content wakes nobody", []step{
			doSync(),
			doApply(wakeAny, set("a", 1), set("b", 1)),
			doSub(wakeYes, Wildcard),
			doNext([]string{"a@1", "b@1"}),
			{apply: []ResourceUpdate{set("a", 1), set("b", 1)}, changes: &ApplyResult{Unchanged: 2}, woken: wakeNo},
			doNext(none),
		}},
		{"initial versions: current not sent, stale sent, missing removed", []step{
			doApply(wakeAny, set("a", 1), set("b", 1), set("c", 1)),
			doSync(),
			{change: &SubscriptionChange{Subscribe: []string{"a", "b", "c", "d", "e"}}, initial: map[string]int{"a": 1, "b": 0, "c": -1, "d": 1}, woken: wakeYes},
			doNext([]string{"b@1", "c@1"}, "d", "e"),
			doNext(none),
			{client: []string{"a@1", "b@1", "c@1"}},
		}},
		{"initial versions on a wildcard subscription", []step{
			doApply(wakeAny, set("a", 1), set("b", 1)),
			doSync(),
			{change: &SubscriptionChange{Subscribe: []string{Wildcard}}, initial: map[string]int{"a": 1, "b": 2, "gone": 1}, woken: wakeYes},
			doNext([]string{"b@1"}, "gone"),
			doNext(none),
			doApply(wakeYes, del("a")),
			doNext(none, "a"),
			{client: []string{"b@1"}},
		}},
		{"initial versions before sync", []step{
			doApply(wakeAny, set("a", 1)),
			{change: &SubscriptionChange{Subscribe: []string{"a", "b"}}, initial: map[string]int{"a": 1, "b": 1}, woken: wakeYes},
			doNext(none),
			doSync(),
			doNext(none, "b"),
		}},
		{"wildcard gets everything, removals only of names it was sent", []step{
			doSync(),
			doApply(wakeAny, set("a", 1), set("b", 1)),
			doSub(wakeYes, Wildcard),
			doNext([]string{"a@1", "b@1"}),
			doApply(wakeYes, set("c", 1)),
			doNext([]string{"c@1"}),
			doApply(wakeYes, set("x", 1)),
			doApply(wakeYes, del("x")),
			doNext(none),
			doApply(wakeYes, del("b")),
			doNext(none, "b"),
			{apply: []ResourceUpdate{del("b"), del("never")}, changes: &ApplyResult{Unchanged: 2}, woken: wakeNo},
			doNext(none),
			{client: []string{"a@1", "c@1"}},
		}},
		{"wildcard with a missing named name", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, Wildcard, "m"),
			doNext([]string{"a@1"}, "m"),
			doNext(none),
			doApply(wakeYes, set("m", 1)),
			doNext([]string{"m@1"}),
		}},
		{"unsubscribing sends nothing and forgets", []step{
			doSync(),
			doApply(wakeAny, set("a", 1), set("b", 1)),
			doSub(wakeYes, "a", "b"),
			doNext([]string{"a@1", "b@1"}),
			doUnsub(wakeNo, "a"),
			doNext(none),
			{client: []string{"b@1"}},
			{apply: []ResourceUpdate{set("a", 2)}, changes: &ApplyResult{Set: 1}, woken: wakeNo},
			{apply: []ResourceUpdate{del("a")}, changes: &ApplyResult{Deleted: 1}, woken: wakeNo},
			doApply(wakeNo, set("a", 2)),
			doNext(none),
			doSub(wakeYes, "a"),
			doNext([]string{"a@2"}),
			doUnsub(wakeNo, "a"),
			doSub(wakeYes, "a"),
			doNext([]string{"a@2"}),
			{change: &SubscriptionChange{Unsubscribe: []string{"a"}, Subscribe: []string{"a"}}, woken: wakeYes},
			doNext([]string{"a@2"}),
			doUnsub(wakeNo, "not-subscribed"),
		}},
		{"unsubscribing a missing name and subscribing again tells again", []step{
			doSync(),
			doSub(wakeYes, "m"),
			doNext(none, "m"),
			doUnsub(wakeNo, "m"),
			doNext(none),
			doSub(wakeYes, "m"),
			doNext(none, "m"),
		}},
		{"re-subscribing a subscribed name answers it again", []step{
			// Envoy removes a cluster and adds it back without unsubscribing
			// in between; it no longer holds the CLA and waits for it.
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a"),
			doNext([]string{"a@1"}),
			doSub(wakeYes, "a"),
			doNext([]string{"a@1"}),
			doSub(wakeYes, "gone"),
			doNext(none, "gone"),
			doSub(wakeYes, "gone"),
			doNext(none, "gone"),
			{change: &SubscriptionChange{Subscribe: []string{"a"}}, initial: map[string]int{"a": 1}, woken: wakeYes},
			doNext(none),
		}},
		{"re-subscribing the wildcard sends nothing", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a"),
			doNext([]string{"a@1"}),
			doSub(wakeYes, Wildcard),
			doNext(none),
			doSub(wakeNo, Wildcard),
			doNext(none),
		}},
		{"named subscription ignores other names", []step{
			doSync(),
			doSub(wakeYes, "a"),
			doNext(none, "a"),
			{apply: []ResourceUpdate{set("b", 1), set("c", 1)}, changes: &ApplyResult{Set: 2, Notified: 0}, woken: wakeNo},
			doNext(none),
		}},
		{"unsubscribing the wildcard forgets what only it gave", []step{
			doSync(),
			doApply(wakeAny, set("a", 1), set("b", 1), set("c", 1)),
			doSub(wakeYes, Wildcard, "a"),
			doNext([]string{"a@1", "b@1", "c@1"}),
			doUnsub(wakeNo, Wildcard),
			doNext(none),
			{client: []string{"a@1"}},
			doApply(wakeNo, set("b", 2)),
			doApply(wakeNo, del("b")),
			doApply(wakeNo, set("b", 2)),
			doApply(wakeYes, set("a", 2)),
			doNext([]string{"a@2"}),
			doSub(wakeYes, Wildcard),
			doNext([]string{"b@2", "c@1"}),
			{client: []string{"a@2", "b@2", "c@1"}},
		}},
		// xds_protocol.rst, "Unsubscribing from Resources": the client
		// cannot tell whether the wildcard still covers the name, so the
		// server answers with the resource or its removal.
		{"unsubscribing a name the wildcard still covers is answered with the resource", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, Wildcard, "a"),
			doNext([]string{"a@1"}),
			doUnsub(wakeYes, "a"),
			doNext([]string{"a@1"}),
			doApply(wakeYes, set("a", 2)),
			doNext([]string{"a@2"}),
			doApply(wakeYes, del("a")),
			doNext(none, "a"),
		}},
		{"unsubscribing a name the wildcard does not cover is answered with its removal", []step{
			doSync(),
			doSub(wakeYes, Wildcard, "x"),
			doNext(none, "x"),
			doUnsub(wakeYes, "x"),
			doNext(none, "x"),
			doApply(wakeYes, set("x", 1)),
			doNext([]string{"x@1"}),
		}},
		{"subscribe and unsubscribe the wildcard in one request keeps it", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			{change: &SubscriptionChange{Subscribe: []string{Wildcard}, Unsubscribe: []string{Wildcard}}, woken: wakeYes},
			doNext([]string{"a@1"}),
			doApply(wakeYes, set("b", 1)),
			doNext([]string{"b@1"}),
		}},
		{"synced gate", []step{
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a", "m"),
			doNext(none),
			{woken: wakeNo},
			doApply(wakeYes, set("a", 2)),
			doNext(none),
			doSync(),
			doNext([]string{"a@2"}, "m"),
			{sync: true, woken: wakeNo},
		}},
		{"close unregisters", []step{
			doSync(),
			doApply(wakeAny, set("a", 1)),
			doSub(wakeYes, "a", Wildcard),
			doNext([]string{"a@1"}),
			{close: true, woken: wakeNo},
			{apply: []ResourceUpdate{set("a", 2), set("b", 1)}, changes: &ApplyResult{Set: 2, Notified: 0}, woken: wakeNo},
			doNext(none),
			{change: &SubscriptionChange{Subscribe: []string{"b"}}, wantErr: errAny, woken: wakeNo},
			{close: true, woken: wakeNo},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, 0, tc.steps) })
	}
}

// errAny matches any error in step.wantErr.
var errAny = errors.New("any error")

func runSteps(t *testing.T, maxNames int, steps []step) {
	t.Helper()
	s := NewStore()
	notify := make(chan struct{}, 1)
	sub := s.Subscribe(claType, notify, maxNames)
	c := newSimClient()
	closed := false
	for i, st := range steps {
		if st.apply != nil {
			got := mustApply(t, s, st.apply...)
			if st.changes != nil && got != *st.changes {
				t.Errorf("step %d: Apply reported %+v, want %+v", i, got, *st.changes)
			}
		}
		if st.sync {
			s.MarkSynced()
		}
		if st.change != nil {
			ch := *st.change
			if st.initial != nil {
				ch.InitialVersions = map[string]string{}
				for n, gen := range st.initial {
					if gen < 0 {
						ch.InitialVersions[n] = "no-such-version"
					} else {
						ch.InitialVersions[n] = versionOf(t, n, gen)
					}
				}
			}
			err := sub.Update(ch)
			switch {
			case st.wantErr == nil && err != nil:
				t.Fatalf("step %d: Update: %v", i, err)
			case st.wantErr == errAny && err == nil, st.wantErr != nil && st.wantErr != errAny && !errors.Is(err, st.wantErr):
				t.Fatalf("step %d: ResourceUpdate returned %v, want %v", i, err, st.wantErr)
			case err == nil:
				c.update(ch)
			}
		}
		if st.next {
			b := sub.Next(st.maxBytes)
			if err := c.apply(b, s); err != nil {
				t.Errorf("step %d: %v", i, err)
			}
			got := labels(t, b.Resources)
			if !slices.Equal(got, st.want) || !slices.Equal(b.Removed, st.removed) {
				t.Errorf("step %d: Next = %v removed %v, want %v removed %v", i, got, b.Removed, st.want, st.removed)
			}
		}
		if st.close {
			sub.Close()
			closed = true
		}
		if w := woken(notify); st.woken != wakeAny && w != (st.woken == wakeYes) {
			t.Errorf("step %d: woken %v, want %v", i, w, st.woken == wakeYes)
		}
		if st.client != nil {
			if got := c.labels(t); !slices.Equal(got, st.client) {
				t.Errorf("step %d: client holds %v, want %v", i, got, st.client)
			}
		}
	}
	if closed {
		return
	}
	s.MarkSynced()
	drain(t, sub, c, s, 0)
	if err := c.converged(t, s); err != nil {
		t.Errorf("after the last step: %v", err)
	}
}

// TestNextMaxBytes: a budget splits a big batch across several Next calls,
// each taking at most the budget (or one resource), each but the last waking
// the stream again, together sending every name once.
func TestNextMaxBytes(t *testing.T) {
	probe, err := NewResource("r00", claType, newCLA("r00", 1, testEndpoints))
	if err != nil {
		t.Fatal(err)
	}
	size := probe.WireSize // every rNN at gen 1 has this size
	tests := []struct {
		name      string
		resources int
		missing   int // subscribed names that do not exist
		maxBytes  int
		perBatch  int // resources per batch, but the last
	}{
		{"no bound", 10, 0, 0, 10},
		{"budget larger than everything", 10, 0, 100 * size, 10},
		{"budget of exactly three", 10, 0, 3 * size, 3},
		{"budget just under three", 10, 0, 3*size - 1, 2},
		{"budget smaller than one resource", 5, 0, 1, 1},
		{"budget of one", 7, 0, size, 1},
		{"with removals", 9, 4, 4 * size, 3}, // removals eat into the first batch's budget
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			var names []string
			var updates []ResourceUpdate
			for i := 0; i < tc.resources; i++ {
				n := fmt.Sprintf("r%02d", i)
				names = append(names, n)
				updates = append(updates, set(n, 1))
			}
			for i := 0; i < tc.missing; i++ {
				names = append(names, fmt.Sprintf("m%02d", i))
			}
			mustApply(t, s, updates...)
			s.MarkSynced()
			notify := make(chan struct{}, 1)
			sub := s.Subscribe(claType, notify, 0)
			if err := sub.Update(SubscriptionChange{Subscribe: names}); err != nil {
				t.Fatal(err)
			}
			c := newSimClient()
			c.update(SubscriptionChange{Subscribe: names})
			sent := map[string]int{}
			calls := 0
			for woken(notify) {
				calls++
				if calls > 100 {
					t.Fatal("too many calls")
				}
				b := sub.Next(tc.maxBytes)
				if b.Empty() {
					t.Fatalf("call %d: woken for an empty batch", calls)
				}
				if err := c.apply(b, s); err != nil {
					t.Fatalf("call %d: %v", calls, err)
				}
				bytes := 0
				for _, r := range b.Resources {
					sent[r.Name]++
					bytes += r.WireSize
				}
				for _, n := range b.Removed {
					sent[n]++
				}
				if tc.maxBytes > 0 && len(b.Resources) > 1 && bytes > tc.maxBytes {
					t.Errorf("call %d: %d resources of %d bytes over a budget of %d", calls, len(b.Resources), bytes, tc.maxBytes)
				}
				pending := sub.Stats().Pending
				if left := len(notify) == 1; left != (pending > 0) {
					t.Errorf("call %d: %d names left pending, woken again: %v", calls, pending, left)
				}
				if pending > 0 && tc.missing == 0 && len(b.Resources) != tc.perBatch {
					t.Errorf("call %d: %d resources, want %d", calls, len(b.Resources), tc.perBatch)
				}
			}
			if len(sent) != len(names) {
				t.Errorf("sent %d names, want %d", len(sent), len(names))
			}
			for n, k := range sent {
				if k != 1 {
					t.Errorf("%s sent %d times", n, k)
				}
			}
			wantCalls := (tc.resources + tc.perBatch - 1) / tc.perBatch
			if tc.missing == 0 && calls != wantCalls {
				t.Errorf("%d calls, want %d", calls, wantCalls)
			}
			if err := c.converged(t, s); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestNextMaxBytesLatestVersion: a name left behind by the budget is sent at
// the version current when it is finally taken.
func TestNextMaxBytesLatestVersion(t *testing.T) {
	s := NewStore()
	s.MarkSynced()
	mustApply(t, s, set("a", 1), set("b", 1))
	sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
	if err := sub.Update(SubscriptionChange{Subscribe: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	c := newSimClient()
	c.update(SubscriptionChange{Subscribe: []string{"a", "b"}})
	b := sub.Next(1)
	if len(b.Resources) != 1 {
		t.Fatalf("Next(1) gave %d resources", len(b.Resources))
	}
	if err := c.apply(b, s); err != nil {
		t.Fatal(err)
	}
	first := b.Resources[0].Name
	other := map[string]string{"a": "b", "b": "a"}[first]
	mustApply(t, s, set(other, 2), set(first, 2))
	drain(t, sub, c, s, 1)
	if got, want := c.labels(t), []string{"a@2", "b@2"}; !slices.Equal(got, want) {
		t.Errorf("client %v, want %v", got, want)
	}
}

// TestUpdateMaxNames: a change that would take a subscription over its limit
// fails with ErrTooManyNames and leaves it as it was.
func TestUpdateMaxNames(t *testing.T) {
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("n%03d", i)
	}
	tests := []struct {
		name      string
		maxNames  int
		held      []string
		change    SubscriptionChange
		wantErr   bool
		wantNames int
	}{
		{"within the limit", 3, nil, SubscriptionChange{Subscribe: []string{"a", "b", "c"}}, false, 3},
		{"over the limit", 2, nil, SubscriptionChange{Subscribe: []string{"a", "b", "c"}}, true, 0},
		{"over the limit with names held", 2, []string{"a", "b"}, SubscriptionChange{Subscribe: []string{"c"}}, true, 2},
		{"over the limit with a wildcard and initial versions", 2, []string{"a"},
			SubscriptionChange{Subscribe: []string{"b", "c", "d", Wildcard}, Unsubscribe: []string{"a"}, InitialVersions: map[string]string{"x": "v"}}, true, 1},
		{"held names are not counted again", 2, []string{"a", "b"}, SubscriptionChange{Subscribe: []string{"a", "b"}}, false, 2},
		{"the wildcard is not counted", 1, []string{"a"}, SubscriptionChange{Subscribe: []string{Wildcard}}, false, 1},
		{"zero means no limit", 0, nil, SubscriptionChange{Subscribe: many}, false, 100},
		{"unsubscribing within the limit", 2, []string{"a", "b"}, SubscriptionChange{Unsubscribe: []string{"a"}}, false, 1},
		// A name listed twice in one request is one name.
		{"duplicate names in one request count once", 2, nil, SubscriptionChange{Subscribe: []string{"a", "a", "b"}}, false, 2},
		// A client at its limit replacing one name by another in one request
		// ends at its limit, not over it.
		{"unsubscribing in the same request frees room", 2, []string{"a", "b"}, SubscriptionChange{Unsubscribe: []string{"a"}, Subscribe: []string{"c"}}, false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			mustApply(t, s, set("a", 1), set("b", 1), set("c", 1))
			s.MarkSynced()
			notify := make(chan struct{}, 1)
			sub := s.Subscribe(claType, notify, tc.maxNames)
			c := newSimClient()
			if tc.held != nil {
				if err := sub.Update(SubscriptionChange{Subscribe: tc.held}); err != nil {
					t.Fatal(err)
				}
				c.update(SubscriptionChange{Subscribe: tc.held})
				drain(t, sub, c, s, 0)
			}
			woken(notify)
			before := sub.Stats()
			_, namesBefore := s.SubscriptionCount(claType)

			err := sub.Update(tc.change)
			if tc.wantErr {
				if !errors.Is(err, ErrTooManyNames) {
					t.Fatalf("Update = %v, want ErrTooManyNames", err)
				}
				if after := sub.Stats(); after != before {
					t.Errorf("a refused change altered the subscription: %+v -> %+v", before, after)
				}
				if _, names := s.SubscriptionCount(claType); names != namesBefore {
					t.Errorf("a refused change altered the index: %d -> %d names", namesBefore, names)
				}
				if woken(notify) {
					t.Error("a refused change woke the stream")
				}
				if b := sub.Next(0); !b.Empty() {
					t.Errorf("a refused change left something to send: %v %v", labels(t, b.Resources), b.Removed)
				}
				mustApply(t, s, set("c", 2), set("x", 1))
				if woken(notify) && !slices.Contains(tc.held, "c") {
					t.Error("a refused subscription is notified of its names")
				}
			} else {
				if err != nil {
					t.Fatalf("Update = %v", err)
				}
				c.update(tc.change)
			}
			if got := sub.Stats().Names; got != tc.wantNames {
				t.Errorf("%d names held, want %d", got, tc.wantNames)
			}
			drain(t, sub, c, s, 0)
			if err := c.converged(t, s); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestConcurrentApplyAndSubscriptions runs writers applying batches while
// streams change their subscriptions, take batches, close and reconnect with
// initial versions, and the store syncs midway. Once the writers stop, every
// stream, driven only by its notify channel, must converge on the store.
//
// In "views", streams run at views (some zero, some sharing a zone) and half
// the names have zone variants whose keys change with the generation: each
// stream must converge on its view's variants, and once every stream is
// closed the store holds no variant.
func TestConcurrentApplyAndSubscriptions(t *testing.T) {
	t.Run("removals", func(t *testing.T) { concurrentApplyAndSubscriptions(t, nil, false) })
	t.Run("stand-ins", func(t *testing.T) { concurrentApplyAndSubscriptions(t, emptyCLA, false) })
	t.Run("views", func(t *testing.T) { concurrentApplyAndSubscriptions(t, emptyCLA, true) })
}

// servedTo returns what a subscription at view v is served of name when it
// exists: its variant for v, or its plain resource; nil when absent.
func (s *Store) servedTo(name string, v View) *Resource {
	t := s.lookup(claType)
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.resources[name]
	if r == nil || v.IsZero() {
		return r
	}
	return t.vars[name].delivered(v, r)
}

func concurrentApplyAndSubscriptions(t *testing.T, standIn AbsentFunc, withViews bool) {
	const (
		writers     = 4
		streams     = 6
		applies     = 1500
		alphabet    = 8
		maxGen      = 5
		maxNamesSub = 0
	)
	names := make([]string, alphabet)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i)
	}
	// Pre-build every message: the writers then only Apply.
	msgs := make(map[string][]ResourceUpdate)
	var builds atomic.Int64
	for i, n := range names {
		for gen := 0; gen <= maxGen; gen++ {
			u := set(n, gen)
			if withViews && i%2 == 0 {
				zones := map[string]int{"z2": gen}
				if gen%2 == 0 {
					zones = map[string]int{"z1": gen, "z2": gen + 1}
				}
				u.Variants = zoneVariants{n, zones, &builds}
			}
			msgs[n] = append(msgs[n], u)
		}
	}
	views := []View{{}, {Zone: "z1"}, {Zone: "z2"}, {Zone: "z1", Node: "n1"}, {Zone: "z3"}, {Zone: "z2"}}

	s := NewStore()
	s.RegisterType(claType, standIn)
	var (
		writersWG, streamsWG sync.WaitGroup
		done                 = make(chan struct{})
		syncOnce             sync.Once
	)
	for w := 0; w < writers; w++ {
		writersWG.Add(1)
		go func(w int) {
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < applies; i++ {
				if w == 0 && i == applies/3 {
					syncOnce.Do(s.MarkSynced)
				}
				var batch []ResourceUpdate
				for k := rng.IntN(3) + 1; k > 0; k-- {
					n := names[rng.IntN(alphabet)]
					if rng.IntN(4) == 0 {
						batch = append(batch, del(n))
					} else {
						batch = append(batch, msgs[n][rng.IntN(maxGen+1)])
					}
				}
				if _, err := s.Apply(claType, batch); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}

	type result struct {
		c                           *simClient
		sub                         *Subscription
		updates, batches, reconnect int
	}
	results := make([]result, streams)
	for st := 0; st < streams; st++ {
		streamsWG.Add(1)
		go func(st int) {
			defer streamsWG.Done()
			rng := rand.New(rand.NewPCG(uint64(st), 2))
			notify := make(chan struct{}, 1)
			var view View
			if withViews {
				view = views[st%len(views)]
			}
			sub := s.SubscribeView(claType, view, notify, maxNamesSub)
			c := newSimClient()
			c.standIn = standIn
			c.view = view
			maxBytes := []int{0, 1, 300}[st%3]
			// randNames picks a few names, the wildcard with odds 1 in wOdds.
			randNames := func(wOdds int) []string {
				var out []string
				for k := rng.IntN(3) + 1; k > 0; k-- {
					if rng.IntN(wOdds) == 0 {
						out = append(out, Wildcard)
					} else {
						out = append(out, names[rng.IntN(alphabet)])
					}
				}
				return out
			}
			var updates, batches, reconnects int
			update := func(ch SubscriptionChange) bool {
				updates++
				if err := sub.Update(ch); err != nil {
					t.Errorf("stream %d: Update: %v", st, err)
					return false
				}
				c.update(ch)
				return true
			}
			take := func() bool {
				b := sub.Next(maxBytes)
				if !b.Empty() {
					batches++
				}
				if err := c.apply(b, nil); err != nil {
					t.Errorf("stream %d: %v", st, err)
					return false
				}
				return true
			}
			if !update(SubscriptionChange{Subscribe: randNames(8)}) {
				return
			}
		loop:
			for {
				select {
				case <-done:
					break loop
				default:
				}
				switch op := rng.IntN(10); {
				case op < 2:
					if !update(SubscriptionChange{Subscribe: randNames(8)}) {
						return
					}
				case op < 3:
					if !update(SubscriptionChange{Unsubscribe: randNames(3)}) {
						return
					}
				case op < 4:
					if !update(SubscriptionChange{Subscribe: randNames(8), Unsubscribe: randNames(3)}) {
						return
					}
				case op < 5 && rng.IntN(4) == 0:
					// Reconnect: a new stream, whose first request declares
					// what the client holds.
					reconnects++
					sub.Close()
					if b := sub.Next(0); !b.Empty() {
						t.Errorf("stream %d: Next after Close: %v", st, b)
					}
					// The closed subscription's channel is left behind: a
					// new stream has a new one.
					notify = make(chan struct{}, 1)
					sub = s.SubscribeView(claType, view, notify, maxNamesSub)
					first := SubscriptionChange{InitialVersions: maps.Clone(c.held)}
					for n := range c.names {
						first.Subscribe = append(first.Subscribe, n)
					}
					if c.wildcard {
						first.Subscribe = append(first.Subscribe, Wildcard)
					}
					c = newSimClient()
					c.standIn = standIn
					c.view = view
					if !update(first) {
						return
					}
				default:
					// Wait for a wake-up (or the end): a stream that spins
					// would starve the writers.
					select {
					case <-notify:
						if !take() {
							return
						}
					case <-done:
					case <-time.After(100 * time.Microsecond):
					}
				}
			}
			// The writers have stopped and the store is synced: only the
			// notify channel drives the stream from here on.
			for i := 0; ; i++ {
				if i > 10000 {
					t.Errorf("stream %d: woken forever", st)
					return
				}
				select {
				case <-notify:
					if !take() {
						return
					}
					continue
				default:
				}
				break
			}
			if b := sub.Next(0); !b.Empty() {
				t.Errorf("stream %d: names were left pending with no wake-up: %v removed %v", st, resourceNames(b.Resources), b.Removed)
				c.apply(b, nil)
			}
			if p := sub.Stats().Pending; p != 0 {
				t.Errorf("stream %d: %d names pending after Next ran dry", st, p)
			}
			results[st] = result{c, sub, updates, batches, reconnects}
		}(st)
	}
	writersWG.Wait()
	syncOnce.Do(s.MarkSynced)
	close(done)
	streamsWG.Wait()

	for st, r := range results {
		if r.c == nil {
			continue // reported already
		}
		if err := r.c.converged(t, s); err != nil {
			t.Errorf("stream %d (wildcard %v, names %v): %v", st, r.c.wildcard, slices.Sorted(maps.Keys(r.c.names)), err)
		}
		t.Logf("stream %d: %d updates, %d batches, %d reconnections; ends with wildcard %v and %d names, holding %d resources",
			st, r.updates, r.batches, r.reconnect, r.c.wildcard, len(r.c.names), len(r.c.held))
		r.sub.Close()
	}
	if subs, n := s.SubscriptionCount(claType); subs != 0 || n != 0 {
		t.Errorf("after closing every stream: SubscriptionCount = %d, %d", subs, n)
	}
	if held, _ := s.VariantStats(claType); held != 0 {
		t.Errorf("after closing every stream: %d variants held", held)
	}
	if withViews {
		t.Logf("%d variants built", builds.Load())
	}
	if ch, _ := s.Apply(claType, []ResourceUpdate{set("n0", maxGen+1)}); ch.Notified != 0 {
		t.Errorf("Apply after every stream closed notified %d", ch.Notified)
	}
}

// TestNameStateSize: a subscription keeps one nameState per name, so a field
// added in the wrong place (padding a byte out to a word) costs every
// subscribed name of the fleet.
func TestNameStateSize(t *testing.T) {
	if got, want := unsafe.Sizeof(nameState{}), unsafe.Sizeof("")+unsafe.Sizeof(uintptr(0)); got > want {
		t.Errorf("nameState is %d bytes, over a string and a word (%d)", got, want)
	}
}
