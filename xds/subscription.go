package xds

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Wildcard is the resource name that subscribes to every resource of a type.
const Wildcard = "*"

// ErrTooManyNames is returned when a subscription change would exceed the
// subscription's name limit. The subscription is left unchanged.
var ErrTooManyNames = errors.New("too many subscribed resource names")

// nameState is what a subscription keeps of one name: whether it names it,
// and what it believes its client holds of it (what it was last sent, or
// what it declared in initial_resource_versions). Both live in one map
// entry, not in a set of names and a map of holdings, so that Next looks a
// name up once and a subscription pays one entry per name; the fields are
// ordered so that the struct is a string and two bytes (24 bytes on 64-bit
// platforms). A name neither named nor held has no entry.
type nameState struct {
	// version is the version held, when hold is holdsVersion.
	version string
	hold    holdState
	// named: subscribed to by name, not only through the wildcard.
	named bool
}

// holdState says what the client holds of a name.
type holdState uint8

const (
	// toldNothing: the client was never told about the name, or dropped
	// what it was told (it named the name again).
	toldNothing holdState = iota
	// holdsVersion: the client holds version, sent to it or declared by it.
	// A NACKed version counts as held, so the same content is not resent
	// in a loop; the next change is.
	holdsVersion
	// toldAbsent: the client was sent a removal of the name (or declared an
	// empty version: it holds nothing), so the removal is not repeated.
	toldAbsent
	// mustAnswer: the client must be sent the name's state, whatever it
	// holds: the resource, or a removal.
	mustAnswer
)

// known reports whether the client was told anything of the name.
func (st nameState) known() bool { return st.hold != toldNothing }

// holds reports whether the client holds exactly version v.
func (st nameState) holds(v string) bool { return st.hold == holdsVersion && st.version == v }

// Subscription is one stream's interest in one type of resource. It is safe
// for concurrent use: the store marks names pending from updater goroutines
// while the stream's own goroutines change the subscription and take batches.
type Subscription struct {
	store    *Store
	t        *typeStore
	notify   chan<- struct{}
	maxNames int
	// view is where the subscription's client runs, fixed for its life:
	// it picks the variant of each name it is served (see Variants).
	view View

	mu sync.Mutex // guards every field below
	// names holds the state of every name the subscription names or its
	// client was told about (see nameState); named counts those it names.
	names    map[string]nameState
	named    int
	wildcard bool
	// wildcardSince is when the wildcard was last turned on: a resource
	// observed after it reaches the client as a change, not as its answer.
	wildcardSince time.Time
	pending       map[string]struct{}
	// isolate queues the names of a rejected multi-resource response, to be
	// sent again one per response (see Rejected); isolating is its set.
	isolate   []string
	isolating map[string]struct{}
	// isolatedLast is set when the latest batch was an isolated resend, so
	// that resends and fresh changes take turns.
	isolatedLast bool
	// pendingPeak is the most names pending has held since it was last
	// replaced: Go maps never shrink, and iterating a drained map that once
	// held a full initial sync costs as much as iterating it full.
	pendingPeak int
	closed      bool
}

// pendingShrinkAt is the pendingPeak above which a drained pending map is
// replaced by a fresh one.
const pendingShrinkAt = 64

func (sub *Subscription) notePendingPeak() {
	if len(sub.pending) > sub.pendingPeak {
		sub.pendingPeak = len(sub.pending)
	}
}

// Subscribe opens a subscription to a type for a client that tells no
// place (the zero View): it is served every name's plain resource. notify
// is signalled (never blocking) whenever the subscription may have
// something to send; a stream may share one notify channel of capacity one
// between its subscriptions. maxNames bounds the names it may hold (0 means
// no bound).
func (s *Store) Subscribe(typeURL string, notify chan<- struct{}, maxNames int) *Subscription {
	return s.SubscribeView(typeURL, View{}, notify, maxNames)
}

// SubscribeView opens a subscription, as Subscribe does, for a client at
// view v, fixed for the subscription's life: of each name whose resource
// has [Variants], it is served the variant Key(v) names (the plain resource
// for ""). The zero View is Subscribe.
func (s *Store) SubscribeView(typeURL string, v View, notify chan<- struct{}, maxNames int) *Subscription {
	t := s.typeFor(typeURL)
	sub := &Subscription{
		store:    s,
		t:        t,
		notify:   notify,
		maxNames: maxNames,
		view:     v,
		names:    make(map[string]nameState),
		pending:  make(map[string]struct{}),
	}
	t.mu.Lock()
	t.all[sub] = struct{}{}
	t.mu.Unlock()
	return sub
}

// TypeURL returns the subscription's type.
func (sub *Subscription) TypeURL() string { return sub.t.url }

// View returns the view the subscription was opened with.
func (sub *Subscription) View() View { return sub.view }

// SubscriptionChange is one request's worth of changes to a subscription
// (the argument of [Subscription.Update]); [ResourceUpdate] changes a
// resource in the store instead.
type SubscriptionChange struct {
	Subscribe   []string
	Unsubscribe []string
	// InitialVersions is what the client says it already holds (only
	// meaningful on the first request of a stream).
	InitialVersions map[string]string
}

// Update applies a subscription change. Subscribed names and names listed in
// InitialVersions become pending, so Next answers them: with the resource
// when the client lacks its current version, with a removal when it does not
// exist. A name subscribed to again while subscribed is answered again,
// unless the same change declares the client's version of it. Unsubscribing
// sends nothing back.
//
// It takes these steps, in this order: check the name limit, record the
// declared versions, unsubscribe, subscribe, drop what only the wildcard gave
// when the wildcard goes, build the stand-ins of newly named missing names
// and the variants its view newly needs (outside the type lock), then update
// the type's index.
func (sub *Subscription) Update(c SubscriptionChange) error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return errors.New("subscription closed")
	}
	if err := sub.checkLimitLocked(c); err != nil {
		return err
	}
	first := len(sub.names) == 0 && len(sub.pending) == 0
	if first {
		// A stream's first request names everything it wants at once, and a
		// reconnecting Envoy declares everything it holds: size the maps for
		// that rather than growing them name by name (issue 14's storm
		// profile: their growth was ~12% of the restarted server's CPU).
		n := max(len(c.Subscribe), len(c.InitialVersions))
		sub.names = make(map[string]nameState, n)
		sub.pending = make(map[string]struct{}, n)
	}
	sub.declareLocked(c.InitialVersions)
	unindex, wildcardOff := sub.unsubscribeLocked(c.Unsubscribe)
	// The type lock, read, lets the names kept be the store's own strings
	// (see internLocked); it is held for this step alone, so that a large
	// request delays the store's writers no longer than it must.
	sub.t.mu.RLock()
	index, wildcardOn := sub.subscribeLocked(c.Subscribe, c.InitialVersions, first)
	sub.t.mu.RUnlock()
	if wildcardOn {
		wildcardOff = false // unsubscribed and subscribed again in one request: it stays
	}
	if wildcardOff && sub.wildcard {
		sub.dropWildcardOnlyLocked()
	}
	standIns := sub.t.standInsFor(index)
	variants := sub.t.variantsFor(sub.view, index, wildcardOn && !sub.wildcard)
	sub.reindexLocked(index, unindex, standIns, variants, wildcardOn, wildcardOff)

	sub.notePendingPeak()
	if len(sub.pending) > 0 {
		sub.wake()
	}
	return nil
}

// checkLimitLocked returns ErrTooManyNames, wrapped, when c would take the
// subscription over its name limit. Callers hold sub.mu.
func (sub *Subscription) checkLimitLocked(c SubscriptionChange) error {
	if sub.maxNames <= 0 {
		return nil
	}
	// Counting exactly takes two maps; the upper bound settles the usual case.
	if sub.named+len(c.Subscribe) <= sub.maxNames && len(c.InitialVersions) <= sub.maxNames {
		return nil
	}
	if held := sub.namesAfter(c); held > sub.maxNames {
		return fmt.Errorf("%w: the change would hold %d names, over the limit of %d", ErrTooManyNames, held, sub.maxNames)
	}
	if len(c.InitialVersions) > sub.maxNames {
		return fmt.Errorf("%w: %d initial resource versions, over the limit of %d", ErrTooManyNames, len(c.InitialVersions), sub.maxNames)
	}
	return nil
}

// declareLocked records what the client says it holds and makes those names
// pending, so that Next corrects what is stale. An empty version declares
// nothing held. Callers hold sub.mu.
//
// The names are kept as the request spelled them. Envoy subscribes to every
// name it declares (source/extensions/config_subscription/grpc/
// delta_subscription_state.cc, DeltaSubscriptionState::getNextRequestAckless:
// a stream's first request puts every name of its resource state in
// resource_names_subscribe, and those it holds a version of in
// initial_resource_versions too; in wildcard mode only the names it asked for
// explicitly), and subscribeLocked then stores the store's string in their
// place: assigning to an equal string key stores the new string
// (internal/runtime/maps, runtime_mapassign_faststr). Interning here too would
// only repeat its lookups (issue 14's storm profile: 6% of the restarted
// server's CPU when both did); names only declared, on a wildcard stream, keep
// the request's string.
func (sub *Subscription) declareLocked(versions map[string]string) {
	for name, version := range versions {
		st := sub.names[name]
		if version == "" {
			st.hold, st.version = toldAbsent, ""
		} else {
			st.hold, st.version = holdsVersion, version
		}
		sub.names[name] = st
		sub.pending[name] = struct{}{}
	}
}

// unsubscribeLocked drops names from the subscription. It returns the names
// to take out of the type's index, and whether the wildcard was among them.
// Callers hold sub.mu.
func (sub *Subscription) unsubscribeLocked(names []string) (unindex []string, wildcardOff bool) {
	for _, n := range names {
		if n == Wildcard {
			wildcardOff = true
			continue
		}
		if !sub.names[n].named {
			continue
		}
		sub.named--
		unindex = append(unindex, n)
		if !sub.wildcard {
			delete(sub.names, n)
			delete(sub.pending, n)
		} else {
			// The client cannot tell whether the wildcard still covers the
			// name, so it must be told: the resource, or its removal
			// (xds_protocol.rst, "Unsubscribing from Resources").
			sub.names[n] = nameState{hold: mustAnswer}
			sub.pending[n] = struct{}{}
		}
	}
	return unindex, wildcardOff
}

// newNames are the names an Update adds to the type's index, n of them, in
// names, where Wildcard entries are skipped. On a subscription's first
// request that names no name twice, names is the request's own list, since
// every name in it is new: at the initial sync of a large fleet every
// stream's first request waits for the type lock at once, and a copy of
// the list per stream was 15 bytes per subscription of the peak heap
// (issue 14's fleet-curve, 1,000 streams). Otherwise it is a list of the
// store's strings for the new names.
type newNames struct {
	names []string
	n     int
}

// each calls f with every name, in order.
func (nn newNames) each(f func(string)) {
	for _, n := range nn.names {
		if n != Wildcard {
			f(n)
		}
	}
}

// subscribeLocked adds names to the subscription and makes them pending. It
// returns the names new to the subscription, to add to the type's index,
// and whether the wildcard was among them. first says the subscription
// named nothing before. Callers hold sub.mu and sub.t.mu for reading.
func (sub *Subscription) subscribeLocked(names []string, declared map[string]string, first bool) (index newNames, wildcardOn bool) {
	var list []string
	listed := !first // the request itself is the list until a name repeats
	for i, n := range names {
		if n == Wildcard {
			wildcardOn = true
			continue
		}
		n = sub.t.internLocked(n)
		sub.pending[n] = struct{}{}
		st := sub.names[n]
		if st.named {
			if !listed {
				// Named twice in the first request: list the new names
				// seen so far, and go on listing.
				listed = true
				for _, m := range names[:i] {
					if m != Wildcard {
						list = append(list, sub.t.internLocked(m))
					}
				}
			}
			if _, ok := declared[n]; !ok {
				// A client naming again a name it is subscribed to has
				// dropped its copy (Envoy removes a cluster and adds it back
				// without unsubscribing in between): answer it again.
				sub.names[n] = nameState{named: true}
			}
			continue
		}
		st.named = true
		sub.names[n] = st
		sub.named++
		if listed {
			list = append(list, n)
		}
	}
	if !listed {
		return newNames{names: names, n: sub.named}, wildcardOn
	}
	return newNames{names: list, n: len(list)}, wildcardOn
}

// dropWildcardOnlyLocked forgets what the client holds only through the
// wildcard, which it no longer wants, and turns the wildcard off. Callers
// hold sub.mu.
func (sub *Subscription) dropWildcardOnlyLocked() {
	sub.wildcard = false
	for n, st := range sub.names {
		if !st.named {
			delete(sub.names, n)
			delete(sub.pending, n)
		}
	}
}

// standInsFor builds the stand-ins of the names in index that no
// subscription names yet and that have no resource. It marshals, so it runs
// before the type lock is taken for writing (a hostile client may name
// 100,000 missing names at once). Nil when the type has no AbsentFunc.
func (t *typeStore) standInsFor(index newNames) map[string]*Resource {
	absent := t.absentFunc()
	if absent == nil || index.n == 0 {
		return nil
	}
	t.mu.RLock()
	var missing []string
	index.each(func(n string) {
		if _, named := t.byName[n]; !named && t.resources[n] == nil {
			missing = append(missing, n)
		}
	})
	t.mu.RUnlock()
	if len(missing) == 0 {
		return nil
	}
	standIns := make(map[string]*Resource, len(missing))
	for _, n := range missing {
		standIns[n] = t.buildStandIn(absent, n, time.Time{})
	}
	return standIns
}

// reindexLocked updates the type's index for this subscription: names out,
// names in (with the stand-ins of the missing ones), and the wildcard turned
// off or on; with them, the views of the names that have variants (taking
// the variants prebuilt for its view). Turning the wildcard on makes every
// stored name pending. Callers hold sub.mu; it takes the type lock.
func (sub *Subscription) reindexLocked(index newNames, unindex []string, standIns map[string]*Resource, variants map[string]prebuilt, wildcardOn, wildcardOff bool) {
	t := sub.t
	turnOn := wildcardOn && !sub.wildcard
	t.mu.Lock()
	for _, n := range unindex {
		t.unindexLocked(n, sub)
	}
	index.each(func(n string) {
		set := t.byName[n]
		if set == nil {
			// The first request's own strings may come here (newNames):
			// the index keeps the store's.
			n = t.internLocked(n)
			set = make(map[*Subscription]struct{}, 1)
			t.byName[n] = set
			if t.resources[n] == nil {
				st, built := standIns[n]
				if !built {
					// Named or created and deleted again since the peek:
					// rare, and built here rather than served wrong.
					st = t.buildStandIn(t.absent, n, time.Time{})
				}
				t.stand[n] = st
			}
		}
		set[sub] = struct{}{}
		t.indexViewLocked(n, sub.view, variants)
	})
	if _, was := t.wildcard[sub]; wildcardOff && was {
		delete(t.wildcard, sub)
		t.wildcardViewOffLocked(sub.view)
	}
	if turnOn {
		t.wildcard[sub] = struct{}{}
		t.wildcardViewOnLocked(sub.view, variants)
		// Everything stored is new to this subscription.
		for n := range t.resources {
			sub.pending[n] = struct{}{}
		}
	}
	t.mu.Unlock()
	if turnOn {
		sub.wildcard = true
		sub.wildcardSince = time.Now()
	}
}

// namesAfter counts the names the subscription would hold after c, without
// changing it. Callers hold sub.mu.
func (sub *Subscription) namesAfter(c SubscriptionChange) int {
	gone := make(map[string]struct{}, len(c.Unsubscribe))
	for _, n := range c.Unsubscribe {
		if sub.names[n].named {
			gone[n] = struct{}{}
		}
	}
	added := make(map[string]struct{}, len(c.Subscribe))
	for _, n := range c.Subscribe {
		if n == Wildcard {
			continue
		}
		if !sub.names[n].named {
			added[n] = struct{}{}
		} else {
			// Unsubscribed and subscribed in one request: it stays.
			delete(gone, n)
		}
	}
	return sub.named - len(gone) + len(added)
}

// Batch is what a subscription should send next.
type Batch struct {
	Resources []*Resource // sorted by name
	Removed   []string    // sorted
	// Observed holds the ObservedAt of the resources in the batch that
	// propagate a change the client was subscribed to when it happened: a
	// new version of what it was sent or declared, a name created after it
	// was told the name does not exist, or one created under its wildcard.
	// First answers to a subscription (an initial sync, a newly subscribed
	// name) are left out: their ObservedAt says how old the content is, not
	// how long its change took to arrive. Unordered; zero times omitted.
	Observed []time.Time
}

// Empty reports whether the batch carries nothing.
func (b Batch) Empty() bool { return len(b.Resources) == 0 && len(b.Removed) == 0 }

// Next takes pending names and returns the resources and removals that bring
// the client to the current state, at most about maxBytes of resources and
// removals (0 means no bound; one entry is always allowed). What it returns
// is recorded as sent. Names beyond the budget stay pending, and the
// subscription wakes itself again so they are not forgotten. Before the store
// is synced it returns an empty batch and keeps everything pending.
//
// A name the subscription names that has no resource is served as the
// type's stand-in (see RegisterType) when it has one; a removal is sent only
// where there is none, and to wildcard subscriptions. Names of a rejected
// response (see Rejected) are sent again one per batch, taking turns with
// fresh changes.
//
// It takes these steps: the synced gate; one isolated resend when it is its
// turn (nextIsolatedLocked), else the pending names that fit the budget
// (nextPendingLocked, each name answered by answerLocked); then a wake for
// what is left, or a fresh pending map once a large one is drained.
func (sub *Subscription) Next(maxBytes int) Batch {
	if !sub.store.Synced() {
		return Batch{}
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed || len(sub.pending) == 0 && len(sub.isolate) == 0 {
		return Batch{}
	}
	t := sub.t
	t.mu.RLock()
	var b Batch
	if len(sub.isolate) > 0 && (!sub.isolatedLast || !sub.hasFreshLocked()) {
		b = sub.nextIsolatedLocked()
	}
	more := false
	if b.Empty() {
		b, more = sub.nextPendingLocked(maxBytes)
	}
	t.mu.RUnlock()
	sub.afterBatchLocked(more)
	sort.Slice(b.Resources, func(i, j int) bool { return b.Resources[i].Name < b.Resources[j].Name })
	sort.Strings(b.Removed)
	return b
}

// afterBatchLocked wakes the subscription again when names were left for
// lack of room or resends are queued; otherwise, once a pending map that
// grew large is drained, it replaces it (Go maps never shrink). Callers hold
// sub.mu.
func (sub *Subscription) afterBatchLocked(more bool) {
	if more || len(sub.isolate) > 0 {
		sub.wake()
	} else if len(sub.pending) == 0 && sub.pendingPeak > pendingShrinkAt {
		sub.pending = make(map[string]struct{})
		sub.pendingPeak = 0
	}
}

// currentLocked returns what the subscription should hold of name: its
// resource (the variant for its view, if the resource has one), its
// stand-in if the subscription names it, or nil (a removal). Callers hold
// sub.mu and t.mu.
func (sub *Subscription) currentLocked(name string, named bool) *Resource {
	t := sub.t
	if r := t.resources[name]; r != nil {
		if !sub.view.IsZero() {
			return t.vars[name].delivered(sub.view, r)
		}
		return r
	}
	if named {
		return t.stand[name]
	}
	return nil
}

// hasFreshLocked reports whether a pending name is not waiting for an
// isolated resend. Callers hold sub.mu.
func (sub *Subscription) hasFreshLocked() bool {
	for n := range sub.pending {
		if _, iso := sub.isolating[n]; !iso {
			return true
		}
	}
	return false
}

// nextIsolatedLocked returns one name of a rejected response, alone, at its
// current state; an empty batch when none is left to send. Callers hold
// sub.mu and t.mu.
func (sub *Subscription) nextIsolatedLocked() Batch {
	for len(sub.isolate) > 0 {
		name := sub.isolate[0]
		sub.isolate[0] = ""
		sub.isolate = sub.isolate[1:]
		delete(sub.isolating, name)
		named := sub.names[name].named
		if !named && !sub.wildcard {
			continue
		}
		r := sub.currentLocked(name, named)
		if r == nil {
			continue // gone meanwhile: the pending set answers it
		}
		delete(sub.pending, name)
		sub.names[name] = nameState{version: r.Version, hold: holdsVersion, named: named}
		sub.isolatedLast = true
		return Batch{Resources: []*Resource{r}}
	}
	sub.isolate = nil
	return Batch{}
}

// answer is what one pending name calls for.
type answer uint8

const (
	// answerNothing: the client already holds the name's current state, or
	// is not owed it; the name leaves the pending set.
	answerNothing answer = iota
	// answerResource: send the resource (or stand-in) returned with it.
	answerResource
	// answerRemoval: send a removal of the name.
	answerRemoval
)

// answerLocked says what pending name calls for, given its state st, and
// returns the resource to send for answerResource. Callers hold sub.mu and
// t.mu.
func (sub *Subscription) answerLocked(name string, st nameState) (answer, *Resource) {
	if !st.named && !sub.wildcard {
		return answerNothing, nil // unsubscribed meanwhile
	}
	r := sub.currentLocked(name, st.named)
	switch {
	case r == nil && st.hold == toldAbsent:
		return answerNothing, nil // already told
	case r == nil && !st.known() && !st.named:
		return answerNothing, nil // a wildcard subscription never sent it
	case r == nil:
		return answerRemoval, nil
	case st.holds(r.Version):
		return answerNothing, nil
	default:
		return answerResource, r
	}
}

// propagatesChangeLocked reports whether sending r propagates a change the
// client was subscribed to when it happened (see Batch.Observed), given what
// it held before (st). Callers hold sub.mu.
func (sub *Subscription) propagatesChangeLocked(r *Resource, st nameState) bool {
	if r.ObservedAt.IsZero() {
		return false
	}
	return st.known() && st.hold != mustAnswer || sub.wildcard && r.ObservedAt.After(sub.wildcardSince)
}

// nextPendingLocked takes pending names up to the budget. It reports whether
// names were left for lack of room. Callers hold sub.mu and t.mu.
func (sub *Subscription) nextPendingLocked(maxBytes int) (b Batch, more bool) {
	sub.isolatedLast = false
	size := 0
	fits := func(n int) bool { return maxBytes <= 0 || size == 0 || size+n <= maxBytes }
	for name := range sub.pending {
		if _, iso := sub.isolating[name]; iso {
			continue // sent alone, in its turn
		}
		st := sub.names[name]
		what, r := sub.answerLocked(name, st)
		switch what {
		case answerNothing:
			delete(sub.pending, name)
		case answerRemoval:
			if !fits(len(name) + 2) {
				return b, true
			}
			delete(sub.pending, name)
			b.Removed = append(b.Removed, name)
			size += len(name) + 2
			if st.named {
				sub.names[name] = nameState{hold: toldAbsent, named: true}
			} else {
				delete(sub.names, name) // a wildcard removal: nothing to remember
			}
		case answerResource:
			if !fits(r.WireSize) {
				return b, true
			}
			delete(sub.pending, name)
			b.Resources = append(b.Resources, r)
			if sub.propagatesChangeLocked(r, st) {
				b.Observed = append(b.Observed, r.ObservedAt)
			}
			sub.names[name] = nameState{version: r.Version, hold: holdsVersion, named: st.named}
			size += r.WireSize
		}
	}
	return b, false
}

// Rejected tells the subscription that the client rejected (NACKed) a
// response carrying these resource names. Envoy applies a response resource
// by resource and stops at the first it rejects, so the others may or may
// not have reached it; each is therefore sent again, once, in a response of
// its own, so that the good ones arrive and the bad one is rejected alone.
// A response of one resource is not resent: its next change is. It returns
// how many names were queued for a resend.
func (sub *Subscription) Rejected(names []string) int {
	if len(names) < 2 {
		return 0
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return 0
	}
	if sub.isolating == nil {
		sub.isolating = make(map[string]struct{}, len(names))
	}
	queued := 0
	for _, n := range names {
		if _, dup := sub.isolating[n]; dup {
			continue
		}
		sub.isolating[n] = struct{}{}
		sub.isolate = append(sub.isolate, n)
		queued++
	}
	if queued > 0 {
		sub.wake()
	}
	return queued
}

// Stats is a point-in-time view of a subscription for debugging.
type Stats struct {
	TypeURL  string
	View     View
	Names    int
	Wildcard bool
	Pending  int
}

// Stats returns the subscription's current counts.
func (sub *Subscription) Stats() Stats {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return Stats{TypeURL: sub.t.url, View: sub.view, Names: sub.named, Wildcard: sub.wildcard, Pending: len(sub.pending)}
}

// Close unregisters the subscription from the store. It is idempotent.
func (sub *Subscription) Close() {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	sub.closed = true
	names := sub.names
	sub.names = nil
	sub.named = 0
	sub.pending = nil
	sub.mu.Unlock()

	t := sub.t
	t.mu.Lock()
	for n, st := range names {
		if st.named {
			t.unindexLocked(n, sub)
		}
	}
	if _, was := t.wildcard[sub]; was {
		delete(t.wildcard, sub)
		t.wildcardViewOffLocked(sub.view)
	}
	delete(t.all, sub)
	t.mu.Unlock()
}

// unindexLocked removes sub from name's index; a name nobody names any more
// drops its stand-in and is no longer missing, and a view no subscription
// of the name has any more drops its variant. Callers hold t.mu for writing.
func (t *typeStore) unindexLocked(name string, sub *Subscription) {
	set := t.byName[name]
	if set == nil {
		return
	}
	if _, in := set[sub]; !in {
		return
	}
	delete(set, sub)
	t.unindexViewLocked(name, sub.view)
	if len(set) == 0 {
		delete(t.byName, name)
		delete(t.stand, name)
	}
}

func (sub *Subscription) markPending(names []string) {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	for _, n := range names {
		sub.pending[n] = struct{}{}
	}
	sub.notePendingPeak()
	sub.mu.Unlock()
	sub.wake()
}

func (sub *Subscription) wake() {
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}
