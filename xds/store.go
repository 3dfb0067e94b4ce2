package xds

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// EndpointType is the type URL of envoy.config.endpoint.v3.ClusterLoadAssignment,
// the type deltaeds serves.
const EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

// Resource is one stored resource at one version. It is immutable once
// stored and shared, read-only, by every response that carries it: its bytes
// are marshaled once per change, never once per subscriber.
type Resource struct {
	Name string
	// Version is a hash of the serialized bytes, so it is equal wherever the
	// content is equal.
	Version string
	// Wire is the envoy.service.discovery.v3.Resource placed as is into
	// DeltaDiscoveryResponse.resources.
	Wire *discoveryv3.Resource
	// Framed is Wire encoded as one entry of
	// DeltaDiscoveryResponse.resources: tag, length and message. It is shared
	// read-only by every response that carries this version.
	Framed []byte
	// WireSize is len(Framed), the bytes it adds to a response.
	WireSize int
	// ObservedAt is when the change that produced this version was first
	// observed upstream (zero if unknown); it feeds propagation latency.
	ObservedAt time.Time
}

// ResourceUpdate sets one name of the store to new content, or deletes it
// when Message is nil (the argument of [Store.Apply]); [SubscriptionChange]
// changes what a subscription wants instead.
type ResourceUpdate struct {
	Name    string
	Message proto.Message
	// ObservedAt is when the upstream event behind this update was observed.
	ObservedAt time.Time
	// Variants, when not nil, gives subscriptions at some views a variant
	// of Message instead (see [Variants]); nil: every view gets Message.
	// Ignored when Message is nil. Leave it a nil interface for a resource
	// without variants: a typed nil pointer is a Variants, and the store
	// then keeps the name's views for nothing.
	Variants Variants
	// Encoded, when not nil, is Message's deterministic encoding in
	// pieces (see NewEncodedResource): Apply hashes and frames it instead
	// of marshaling Message.
	Encoded [][]byte
}

// ApplyResult reports what a [Store.Apply] did.
type ApplyResult struct {
	Set       int // names stored with a new version
	Deleted   int // names removed
	Unchanged int // updates that were no-ops
	// Notified is the number of subscriptions woken.
	Notified int
	// VariantsBuilt is the number of variants built and serialized: at
	// most one per distinct key of the views subscribed to each name
	// updated with Variants.
	VariantsBuilt int
}

// Store holds versioned resources by type URL and name and indexes the
// subscriptions to them. The zero value is not usable; call NewStore.
type Store struct {
	mu    sync.RWMutex // guards types
	types map[string]*typeStore

	synced   atomic.Bool
	syncedCh chan struct{} // closed with synced set, once
	syncOnce sync.Once
}

// AbsentFunc says what a name that has no resource is served as to a
// subscription that names it: a message, or nil for a removal. It must be
// deterministic (equal names give equal bytes), so the version it gets is
// the same on every replica and a client holding it is sent nothing again.
type AbsentFunc func(name string) proto.Message

// typeStore holds one type URL's resources and subscription index.
type typeStore struct {
	url    string
	absent AbsentFunc // set once by RegisterType, before any subscription

	mu        sync.RWMutex // guards every field below
	resources map[string]*Resource
	byName    map[string]map[*Subscription]struct{}
	wildcard  map[*Subscription]struct{}
	all       map[*Subscription]struct{}
	// stand holds every name some subscription names and that has no
	// resource (the missing names, see Store.Missing), with what it is
	// served as: built by absent, once per name and change, never per
	// subscriber; nil (a removal) when absent is nil or builds nothing.
	stand map[string]*Resource
	// groups indexes the names of resources by group (see GroupOf), for
	// Suggest: a name is added when its resource is created and dropped
	// when it is deleted, so an update costs nothing here.
	groups map[string]map[string]struct{}
	// vars holds the views and variants of every name whose resource has
	// Variants (see views.go); wildViews counts the wildcard subscriptions
	// by non-zero view; variantsHeld is the number of variants in vars.
	vars         map[string]*nameViews
	wildViews    map[View]int
	variantsHeld int
	// variantBuilds counts the variants built since the store started.
	variantBuilds atomic.Uint64
}

// NewStore returns an empty store that is not yet synced.
func NewStore() *Store {
	return &Store{types: make(map[string]*typeStore), syncedCh: make(chan struct{})}
}

func (s *Store) typeFor(typeURL string) *typeStore {
	s.mu.RLock()
	t := s.types[typeURL]
	s.mu.RUnlock()
	if t != nil {
		return t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t = s.types[typeURL]; t == nil {
		t = &typeStore{
			url:       typeURL,
			resources: make(map[string]*Resource),
			byName:    make(map[string]map[*Subscription]struct{}),
			wildcard:  make(map[*Subscription]struct{}),
			all:       make(map[*Subscription]struct{}),
			stand:     make(map[string]*Resource),
			groups:    make(map[string]map[string]struct{}),
			vars:      make(map[string]*nameViews),
			wildViews: make(map[View]int),
		}
		s.types[typeURL] = t
	}
	return t
}

// lookup returns a type's store, or nil: reads never register a type.
func (s *Store) lookup(typeURL string) *typeStore {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.types[typeURL]
}

// HasType reports whether the type was registered or anything of it stored.
func (s *Store) HasType(typeURL string) bool { return s.lookup(typeURL) != nil }

// RegisterType makes typeURL a served type before any resource of it exists,
// so that clients subscribing to it are answered rather than ignored. absent
// says what a name subscribed by name but without a resource is served as;
// nil means a removal. Wildcard subscriptions are always sent removals for
// names that go away. Register a type before any subscription to it.
func (s *Store) RegisterType(typeURL string, absent AbsentFunc) {
	t := s.typeFor(typeURL)
	t.mu.Lock()
	t.absent = absent
	t.mu.Unlock()
}

// absentFunc returns the type's AbsentFunc.
func (t *typeStore) absentFunc() AbsentFunc {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.absent
}

// internLocked returns the store's own string for name when it holds the
// name, as a resource or a stand-in, and name otherwise. A subscription
// keeps the names it is subscribed to for as long as it lives, and a
// request's names are decoded into one string each, per stream: keeping the
// store's string instead lets the request's go, so a name subscribed by
// thousands of streams is stored once (issue 14: the request's strings were
// ~33 B per subscription at 1,260 names per stream). Callers hold t.mu,
// read or write.
func (t *typeStore) internLocked(name string) string {
	if r := t.resources[name]; r != nil {
		return r.Name
	}
	if r := t.stand[name]; r != nil {
		return r.Name
	}
	return name
}

// buildStandIn builds what name is served as while it has no resource, or
// nil when absent is nil. It marshals, so callers do not hold t.mu: a client
// naming thousands of missing names must not stall every other stream.
func (t *typeStore) buildStandIn(absent AbsentFunc, name string, observedAt time.Time) *Resource {
	if absent == nil {
		return nil
	}
	m := absent(name)
	if m == nil {
		return nil
	}
	r, err := NewResource(name, t.url, m)
	if err != nil {
		return nil // the type's own hook failed to marshal: fall back to a removal
	}
	r.ObservedAt = observedAt
	return r
}

// MarkSynced opens the synced gate: from now on subscriptions are answered.
// Every subscription with pending names is woken. Calling it again is a no-op.
func (s *Store) MarkSynced() {
	s.syncOnce.Do(func() {
		s.synced.Store(true)
		close(s.syncedCh)
		s.mu.RLock()
		types := make([]*typeStore, 0, len(s.types))
		for _, t := range s.types {
			types = append(types, t)
		}
		s.mu.RUnlock()
		for _, t := range types {
			t.mu.RLock()
			subs := make([]*Subscription, 0, len(t.all))
			for sub := range t.all {
				subs = append(subs, sub)
			}
			t.mu.RUnlock()
			for _, sub := range subs {
				sub.wake()
			}
		}
	})
}

// Synced reports whether MarkSynced was called.
func (s *Store) Synced() bool { return s.synced.Load() }

// SyncedC returns a channel closed once MarkSynced has run: for a caller
// that must wait for the first full sync, where Synced only tells.
func (s *Store) SyncedC() <-chan struct{} { return s.syncedCh }

// NewResource serializes m deterministically and versions it by content.
//
// It also encodes, once, the resource exactly as it appears inside a
// DeltaDiscoveryResponse (field 2, resources), so a response can be written
// by concatenating shared bytes instead of marshaling per subscriber. Wire's
// Any.Value aliases those bytes: the CLA is held once.
func NewResource(name, typeURL string, m proto.Message) (*Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s %q: %w", typeURL, name, err)
	}
	return newResource(name, typeURL, [][]byte{b}, len(b), sha256.Sum256(b)), nil
}

// NewEncodedResource is NewResource for a message already encoded: the
// pieces, concatenated, must be its deterministic encoding (what
// proto.MarshalOptions{Deterministic: true}.Marshal returns), which is what
// the version hashes and the wire carries. They are copied, once, into the
// framed bytes, so a caller may build them from cached per-part encodings
// (translate.ServiceCache does) and keep them. It fails on no pieces.
func NewEncodedResource(name, typeURL string, pieces [][]byte) (*Resource, error) {
	if pieces == nil {
		return nil, fmt.Errorf("encoded %s %q: no bytes", typeURL, name)
	}
	h := sha256.New()
	size := 0
	for _, p := range pieces {
		h.Write(p)
		size += len(p)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return newResource(name, typeURL, pieces, size, sum), nil
}

// newResource frames the encoding held in pieces (size bytes in all, of
// hash sum).
func newResource(name, typeURL string, pieces [][]byte, size int, sum [sha256.Size]byte) *Resource {
	version := base64.RawURLEncoding.EncodeToString(sum[:16])

	// Field order is the one deterministic marshaling uses: version (1),
	// resource (2), name (3); inside the Any, type_url (1), value (2).
	anyLen := protowire.SizeTag(1) + protowire.SizeBytes(len(typeURL)) +
		protowire.SizeTag(2) + protowire.SizeBytes(size)
	resLen := protowire.SizeTag(1) + protowire.SizeBytes(len(version)) +
		protowire.SizeTag(2) + protowire.SizeBytes(anyLen) +
		protowire.SizeTag(3) + protowire.SizeBytes(len(name))
	framed := make([]byte, 0, protowire.SizeTag(2)+protowire.SizeBytes(resLen))
	framed = protowire.AppendTag(framed, 2, protowire.BytesType)
	framed = protowire.AppendVarint(framed, uint64(resLen))
	framed = protowire.AppendTag(framed, 1, protowire.BytesType)
	framed = protowire.AppendString(framed, version)
	framed = protowire.AppendTag(framed, 2, protowire.BytesType)
	framed = protowire.AppendVarint(framed, uint64(anyLen))
	framed = protowire.AppendTag(framed, 1, protowire.BytesType)
	framed = protowire.AppendString(framed, typeURL)
	framed = protowire.AppendTag(framed, 2, protowire.BytesType)
	framed = protowire.AppendVarint(framed, uint64(size))
	value := len(framed)
	for _, p := range pieces {
		framed = append(framed, p...)
	}
	framed = protowire.AppendTag(framed, 3, protowire.BytesType)
	framed = protowire.AppendString(framed, name)

	wire := &discoveryv3.Resource{
		Name:     name,
		Version:  version,
		Resource: &anypb.Any{TypeUrl: typeURL, Value: framed[value : value+size : value+size]},
	}
	return &Resource{Name: name, Version: version, Wire: wire, Framed: framed, WireSize: len(framed)}
}

// Apply sets and deletes many names of one type in one call. Each changed
// resource is serialized and hashed once, here, before any lock is taken.
// Content equal to what is stored is a no-op. Only the subscriptions of the
// changed names (and wildcard subscriptions) are touched. A message that fails
// to marshal is skipped and reported in the returned error; the rest of the
// batch is applied. When a name appears more than once, the last one wins.
func (s *Store) Apply(typeURL string, updates []ResourceUpdate) (ApplyResult, error) {
	var errs []error
	last := make(map[string]int, len(updates))
	for i, u := range updates {
		last[u.Name] = i
	}
	prepared := make(map[string]*Resource, len(last)) // nil value: delete
	for i, u := range updates {
		if last[u.Name] != i {
			continue // a later update of the same name wins; marshal only that one
		}
		if u.Message == nil {
			prepared[u.Name] = nil
			continue
		}
		var r *Resource
		var err error
		if u.Encoded != nil {
			r, err = NewEncodedResource(u.Name, typeURL, u.Encoded)
		} else {
			r, err = NewResource(u.Name, typeURL, u.Message)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.ObservedAt = u.ObservedAt
		prepared[u.Name] = r
	}

	t := s.typeFor(typeURL)
	// Stand-ins for the deleted names are built here too, outside the lock;
	// only those some subscription names are kept.
	var standIns map[string]*Resource
	if absent := t.absentFunc(); absent != nil {
		for name, r := range prepared {
			if r == nil {
				if standIns == nil {
					standIns = make(map[string]*Resource)
				}
				standIns[name] = t.buildStandIn(absent, name, updates[last[name]].ObservedAt)
			}
		}
	}
	// Variants are keyed and built here too, outside the lock, for the
	// views subscribed now; a view that subscribes meanwhile is built under
	// it (installVariantsLocked).
	plans, built, verrs := t.planVariants(prepared, updates, last)
	errs = append(errs, verrs...)
	ch := ApplyResult{VariantsBuilt: built}
	touched := make(map[*Subscription][]string)
	t.mu.Lock()
	for name, r := range prepared {
		old := t.resources[name]
		plan := plans[name]
		switch {
		case r == nil && old == nil:
			ch.Unchanged++
			continue
		case r == nil:
			delete(t.resources, name)
			t.ungroupLocked(name)
			t.installVariantsLocked(name, nil, nil)
			if len(t.byName[name]) > 0 {
				// Named subscribers are served the stand-in from now on;
				// it carries the deletion's time, for propagation latency.
				t.stand[name] = standIns[name]
			}
			ch.Deleted++
			t.touchLocked(name, touched, func(*Subscription) bool { return true })
			continue
		case plan == nil && old != nil && old.Version == r.Version && t.vars[name] == nil:
			ch.Unchanged++
			continue
		}
		plainChanged := old == nil || old.Version != r.Version
		if plainChanged {
			if old == nil {
				t.groupLocked(name)
			}
			t.resources[name] = r
			delete(t.stand, name)
		} else {
			r = old // equal content: subscribers keep sharing the stored resource
		}
		oldViews := t.installVariantsLocked(name, plan, r)
		newViews := t.vars[name]
		if !plainChanged && !viewsChanged(oldViews, newViews, r) {
			ch.Unchanged++
			continue
		}
		ch.Set++
		// Only the subscriptions whose delivered version changed are
		// marked: a zero view gets the plain resource; another view its
		// variant, or the plain resource when its key is "".
		t.touchLocked(name, touched, func(sub *Subscription) bool {
			switch {
			case old == nil:
				return true // was absent: a stand-in, a removal, or nothing
			case sub.view.IsZero():
				return plainChanged
			}
			return versionOrEmpty(oldViews.delivered(sub.view, old)) != versionOrEmpty(newViews.delivered(sub.view, r))
		})
	}
	t.mu.Unlock()

	// Marking happens outside the type lock: a subscription's lock is never
	// taken while a type lock is held by this goroutine (see doc.go).
	for sub, names := range touched {
		sub.markPending(names)
	}
	ch.Notified = len(touched)
	return ch, errors.Join(errs...)
}

// touchLocked adds name to the touched names of every subscription covering
// it (naming it, or by wildcard) for which changed is true. Callers hold
// t.mu.
func (t *typeStore) touchLocked(name string, touched map[*Subscription][]string, changed func(*Subscription) bool) {
	named := t.byName[name]
	for sub := range named {
		if changed(sub) {
			touched[sub] = append(touched[sub], name)
		}
	}
	for sub := range t.wildcard {
		if _, isNamed := named[sub]; !isNamed && changed(sub) {
			touched[sub] = append(touched[sub], name)
		}
	}
}

// viewsChanged reports whether some view is delivered a different version
// of a name whose plain resource, plain, did not change, between its old and
// new variants (either nil).
func viewsChanged(old, nv *nameViews, plain *Resource) bool {
	if old == nil && nv == nil {
		return false
	}
	if old != nil {
		for v := range old.keys {
			if versionOrEmpty(old.delivered(v, plain)) != versionOrEmpty(nv.delivered(v, plain)) {
				return true
			}
		}
	}
	if nv != nil {
		for v := range nv.keys {
			if versionOrEmpty(old.delivered(v, plain)) != versionOrEmpty(nv.delivered(v, plain)) {
				return true
			}
		}
	}
	return false
}

// Get returns the current resource of a name, or nil.
func (s *Store) Get(typeURL, name string) *Resource {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.resources[name]
}

// Len returns the number of resources of a type.
func (s *Store) Len(typeURL string) int {
	t := s.lookup(typeURL)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.resources)
}

// List returns every resource of a type sorted by name. It copies the index
// and is meant for debug endpoints, not for hot paths.
func (s *Store) List(typeURL string) []*Resource {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	out := make([]*Resource, 0, len(t.resources))
	for _, r := range t.resources {
		out = append(out, r)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns the names of a type, unsorted.
func (s *Store) Names(typeURL string) []string {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.resources))
	for n := range t.resources {
		out = append(out, n)
	}
	return out
}

// SubscriptionCount returns the number of open subscriptions of a type and
// the number of names they hold in total (wildcards count as one).
func (s *Store) SubscriptionCount(typeURL string) (subs, names int) {
	t := s.lookup(typeURL)
	if t == nil {
		return 0, 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, set := range t.byName {
		names += len(set)
	}
	return len(t.all), names + len(t.wildcard)
}
