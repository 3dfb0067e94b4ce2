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

// absent marks, in Subscription.sent, a name the client has been told does
// not exist, so the removal is not repeated.
const absent = ""

// Subscription is one stream's interest in one type of resource. It is safe
// for concurrent use: the store marks names pending from updater goroutines
// while the stream's own goroutines change the subscription and take batches.
type Subscription struct {
	store    *Store
	t        *typeStore
	notify   chan<- struct{}
	maxNames int

	mu       sync.Mutex // guards every field below
	names    map[string]struct{}
	wildcard bool
	// wildcardSince is when the wildcard was last turned on: a resource
	// observed after it reaches the client as a change, not as its answer.
	wildcardSince time.Time
	// sent is the version the client was last sent, or declared in
	// initial_resource_versions, per name; absent for a removal sent. It is
	// what the client holds or rejected: a NACKed version stays here, so the
	// same content is not resent in a loop, and the next change is.
	sent    map[string]string
	pending map[string]struct{}
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

// Subscribe opens a subscription to a type. notify is signalled (never
// blocking) whenever the subscription may have something to send; a stream
// may share one notify channel of capacity one between its subscriptions.
// maxNames bounds the names it may hold (0 means no bound).
func (s *Store) Subscribe(typeURL string, notify chan<- struct{}, maxNames int) *Subscription {
	t := s.typeFor(typeURL)
	sub := &Subscription{
		store:    s,
		t:        t,
		notify:   notify,
		maxNames: maxNames,
		names:    make(map[string]struct{}),
		sent:     make(map[string]string),
		pending:  make(map[string]struct{}),
	}
	t.mu.Lock()
	t.all[sub] = struct{}{}
	t.mu.Unlock()
	return sub
}

// TypeURL returns the subscription's type.
func (sub *Subscription) TypeURL() string { return sub.t.url }

// Change is one request's worth of subscription changes.
type Change struct {
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
func (sub *Subscription) Update(c Change) error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return errors.New("subscription closed")
	}
	if sub.maxNames > 0 {
		if held := sub.namesAfter(c); held > sub.maxNames {
			return fmt.Errorf("%w: the change would hold %d names, over the limit of %d", ErrTooManyNames, held, sub.maxNames)
		}
		if len(c.InitialVersions) > sub.maxNames {
			return fmt.Errorf("%w: %d initial resource versions, over the limit of %d", ErrTooManyNames, len(c.InitialVersions), sub.maxNames)
		}
	}

	for name, version := range c.InitialVersions {
		sub.sent[name] = version
		sub.pending[name] = struct{}{}
	}

	var index, unindex []string
	wildcardOn, wildcardOff := false, false
	for _, n := range c.Unsubscribe {
		if n == Wildcard {
			wildcardOff = true
			continue
		}
		if _, ok := sub.names[n]; !ok {
			continue
		}
		delete(sub.names, n)
		unindex = append(unindex, n)
		if !sub.wildcard {
			delete(sub.sent, n)
			delete(sub.pending, n)
		}
	}
	for _, n := range c.Subscribe {
		if n == Wildcard {
			wildcardOn = true
			wildcardOff = false
			continue
		}
		sub.pending[n] = struct{}{}
		if _, ok := sub.names[n]; ok {
			if _, declared := c.InitialVersions[n]; !declared {
				// A client naming again a name it is subscribed to has
				// dropped its copy (Envoy removes a cluster and adds it back
				// without unsubscribing in between): answer it again.
				delete(sub.sent, n)
			}
			continue
		}
		sub.names[n] = struct{}{}
		index = append(index, n)
	}
	if wildcardOff && sub.wildcard {
		sub.wildcard = false
		// The client no longer wants what only the wildcard gave it.
		for n := range sub.sent {
			if _, named := sub.names[n]; !named {
				delete(sub.sent, n)
				delete(sub.pending, n)
			}
		}
	}

	t := sub.t
	t.mu.Lock()
	for _, n := range unindex {
		if set := t.byName[n]; set != nil {
			delete(set, sub)
			if len(set) == 0 {
				delete(t.byName, n)
			}
		}
	}
	for _, n := range index {
		set := t.byName[n]
		if set == nil {
			set = make(map[*Subscription]struct{}, 1)
			t.byName[n] = set
		}
		set[sub] = struct{}{}
	}
	if wildcardOff {
		delete(t.wildcard, sub)
	}
	if wildcardOn && !sub.wildcard {
		t.wildcard[sub] = struct{}{}
		// Everything stored is new to this subscription.
		for n := range t.resources {
			sub.pending[n] = struct{}{}
		}
	}
	t.mu.Unlock()
	if wildcardOn && !sub.wildcard {
		sub.wildcard = true
		sub.wildcardSince = time.Now()
	}

	sub.notePendingPeak()
	if len(sub.pending) > 0 {
		sub.wake()
	}
	return nil
}

// namesAfter counts the names the subscription would hold after c, without
// changing it. Callers hold sub.mu.
func (sub *Subscription) namesAfter(c Change) int {
	gone := make(map[string]struct{}, len(c.Unsubscribe))
	for _, n := range c.Unsubscribe {
		if _, ok := sub.names[n]; ok {
			gone[n] = struct{}{}
		}
	}
	added := make(map[string]struct{}, len(c.Subscribe))
	for _, n := range c.Subscribe {
		if n == Wildcard {
			continue
		}
		if _, held := sub.names[n]; !held {
			added[n] = struct{}{}
		} else if _, leaving := gone[n]; leaving {
			// Unsubscribed and subscribed in one request: it stays.
			delete(gone, n)
		}
	}
	return len(sub.names) - len(gone) + len(added)
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
// the client to the current state, at most about maxBytes of resources (0
// means no bound; one resource is always allowed). What it returns is
// recorded as sent. Names beyond the budget stay pending, and the
// subscription wakes itself again so they are not forgotten. Before the store
// is synced it returns an empty batch and keeps everything pending.
func (sub *Subscription) Next(maxBytes int) Batch {
	if !sub.store.Synced() {
		return Batch{}
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed || len(sub.pending) == 0 {
		return Batch{}
	}
	var b Batch
	size := 0
	more := false
	t := sub.t
	t.mu.RLock()
	for name := range sub.pending {
		_, named := sub.names[name]
		if !named && !sub.wildcard {
			delete(sub.pending, name)
			continue
		}
		r := t.resources[name]
		held, known := sub.sent[name]
		if r == nil {
			delete(sub.pending, name)
			switch {
			case known && held == absent:
			case known || named:
				// A named subscription learns promptly that the name does not
				// exist; a wildcard one only about what it was sent.
				b.Removed = append(b.Removed, name)
				size += len(name) + 2
				if named {
					sub.sent[name] = absent
				} else {
					delete(sub.sent, name)
				}
			}
			continue
		}
		if known && held == r.Version {
			delete(sub.pending, name)
			continue
		}
		if maxBytes > 0 && size > 0 && size+r.WireSize > maxBytes {
			more = true
			break
		}
		delete(sub.pending, name)
		b.Resources = append(b.Resources, r)
		if !r.ObservedAt.IsZero() && (known || sub.wildcard && r.ObservedAt.After(sub.wildcardSince)) {
			b.Observed = append(b.Observed, r.ObservedAt)
		}
		sub.sent[name] = r.Version
		size += r.WireSize
	}
	t.mu.RUnlock()
	if more {
		sub.wake()
	} else if len(sub.pending) == 0 && sub.pendingPeak > pendingShrinkAt {
		sub.pending = make(map[string]struct{})
		sub.pendingPeak = 0
	}
	sort.Slice(b.Resources, func(i, j int) bool { return b.Resources[i].Name < b.Resources[j].Name })
	sort.Strings(b.Removed)
	return b
}

// Stats is a point-in-time view of a subscription for debugging.
type Stats struct {
	TypeURL  string
	Names    int
	Wildcard bool
	Pending  int
}

// Stats returns the subscription's current counts.
func (sub *Subscription) Stats() Stats {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return Stats{TypeURL: sub.t.url, Names: len(sub.names), Wildcard: sub.wildcard, Pending: len(sub.pending)}
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
	sub.pending = nil
	sub.sent = nil
	sub.mu.Unlock()

	t := sub.t
	t.mu.Lock()
	for n := range names {
		if set := t.byName[n]; set != nil {
			delete(set, sub)
			if len(set) == 0 {
				delete(t.byName, n)
			}
		}
	}
	delete(t.wildcard, sub)
	delete(t.all, sub)
	t.mu.Unlock()
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
