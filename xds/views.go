package xds

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
)

// View is where a client runs: its zone and its node name. The store reads
// nothing into it beyond equality: a resource's [Variants] say what each view
// receives. The zero View (a client that tells no place) always receives the
// plain resource.
type View struct {
	Zone string `json:"zone,omitempty"`
	Node string `json:"node,omitempty"`
}

// IsZero reports whether v tells no place.
func (v View) IsZero() bool { return v == View{} }

// String formats v for logs: "zone=Z node=N", with the empty parts left out.
func (v View) String() string {
	switch {
	case v.Zone != "" && v.Node != "":
		return "zone=" + v.Zone + " node=" + v.Node
	case v.Zone != "":
		return "zone=" + v.Zone
	case v.Node != "":
		return "node=" + v.Node
	}
	return ""
}

// Variants builds a resource's per-view variants; the resource's producer
// supplies it with each update ([ResourceUpdate.Variants]), and the store
// keeps it with the resource until the next update of the name.
//
// Both methods may be called from several goroutines at once, for as long
// as the store holds the resource: a Variants must be immutable.
type Variants interface {
	// Key names the variant a client at v receives; "" means the plain
	// resource (ResourceUpdate.Message). Views with equal keys get equal
	// messages. It is called under the store's type lock: keep it cheap
	// (a few map lookups) and never call the store from it.
	Key(v View) string
	// Build returns the message for a client at v (only called when
	// Key(v) != ""). It is called without any store lock, once per key and
	// change of the resource, never once per subscriber. A nil message, or
	// one that fails to marshal, serves the plain resource to that view.
	Build(v View) proto.Message
}

// nameViews is what the store keeps for one name whose resource has
// Variants: which views subscribe to it and the variants they receive. A
// name whose resource has no Variants has none, so the common case costs
// nothing. Guarded by typeStore.mu.
type nameViews struct {
	variants Variants
	// named counts the subscriptions naming the name, by non-zero view.
	// Wildcard subscriptions are counted once per type, in
	// typeStore.wildViews. A view subscribes to the name (is "effective")
	// when either count is positive.
	named map[View]int
	// keys holds the key of every effective view ("" for the plain
	// resource). A view in keys has its variant built in byKey.
	keys map[View]string
	// byKey holds the variants of the non-empty keys of effective views.
	byKey map[string]*variant
}

// variant is one built variant of a name, shared by every subscription of
// every view whose key it is.
type variant struct {
	res   *Resource
	views int // effective views whose key this is; dropped at 0
}

func newNameViews(vs Variants) *nameViews {
	return &nameViews{variants: vs, named: make(map[View]int), keys: make(map[View]string), byKey: make(map[string]*variant)}
}

// deliveredVersion is the version nv (nil: none) serves to a non-zero view
// v, given the plain resource plain (nil: none).
func (nv *nameViews) delivered(v View, plain *Resource) *Resource {
	if nv != nil && !v.IsZero() {
		if key := nv.keys[v]; key != "" {
			if vr := nv.byKey[key]; vr != nil {
				return vr.res
			}
		}
	}
	return plain
}

// versionOrEmpty returns r's version, or "" for nil.
func versionOrEmpty(r *Resource) string {
	if r == nil {
		return ""
	}
	return r.Version
}

// buildVariant builds and serializes the variant of name for a client at v,
// or returns nil when Build gives nothing or it fails to marshal (the view
// is then served the plain resource). It marshals: callers should not hold
// t.mu, but may when a view appeared between a peek and the write lock.
func (t *typeStore) buildVariant(name string, vs Variants, v View, observedAt time.Time) (*Resource, error) {
	m := vs.Build(v)
	if m == nil {
		return nil, fmt.Errorf("variant of %s %q for view %q: Build returned nil", t.url, name, v)
	}
	t.variantBuilds.Add(1)
	r, err := NewResource(name, t.url, m)
	if err != nil {
		return nil, fmt.Errorf("variant for view %q: %w", v, err)
	}
	r.ObservedAt = observedAt
	return r, nil
}

// prebuilt is a variant built outside the type lock for one name, valid
// only while the name's nameViews is still nv.
type prebuilt struct {
	nv  *nameViews
	key string
	res *Resource
}

// addViewLocked makes v effective for name: it computes v's key and, when
// no other view has that key yet, takes its variant from pre or builds it.
// It is idempotent. Callers hold t.mu for writing.
func (t *typeStore) addViewLocked(name string, nv *nameViews, v View, pre map[string]prebuilt) {
	if _, known := nv.keys[v]; known {
		return
	}
	key := nv.variants.Key(v)
	if key != "" {
		vr := nv.byKey[key]
		if vr == nil {
			var res *Resource
			if p, ok := pre[name]; ok && p.nv == nv && p.key == key {
				res = p.res
			} else {
				// A view or a resource that appeared since the peek: rare,
				// and built here rather than served wrong.
				var observed time.Time
				if plain := t.resources[name]; plain != nil {
					observed = plain.ObservedAt
				}
				res, _ = t.buildVariant(t.internLocked(name), nv.variants, v, observed)
			}
			if res != nil {
				vr = &variant{res: res}
				nv.byKey[key] = vr
				t.variantsHeld++
			}
		}
		if vr != nil {
			vr.views++
		} else {
			key = "" // Build failed: the plain resource
		}
	}
	nv.keys[v] = key
}

// removeViewLocked makes v no longer effective for nv's name; a variant
// that loses its last view is dropped. Callers hold t.mu for writing.
func (t *typeStore) removeViewLocked(nv *nameViews, v View) {
	key, known := nv.keys[v]
	if !known {
		return
	}
	delete(nv.keys, v)
	if key == "" {
		return
	}
	if vr := nv.byKey[key]; vr != nil {
		vr.views--
		if vr.views <= 0 {
			delete(nv.byKey, key)
			t.variantsHeld--
		}
	}
}

// indexViewLocked counts a subscription at non-zero view v naming name.
// Callers hold t.mu for writing.
func (t *typeStore) indexViewLocked(name string, v View, pre map[string]prebuilt) {
	nv := t.vars[name]
	if nv == nil || v.IsZero() {
		return
	}
	nv.named[v]++
	t.addViewLocked(name, nv, v, pre)
}

// unindexViewLocked uncounts a subscription at view v naming name.
// Callers hold t.mu for writing.
func (t *typeStore) unindexViewLocked(name string, v View) {
	nv := t.vars[name]
	if nv == nil || v.IsZero() {
		return
	}
	if nv.named[v]--; nv.named[v] > 0 {
		return
	}
	delete(nv.named, v)
	if t.wildViews[v] == 0 {
		t.removeViewLocked(nv, v)
	}
}

// wildcardViewOnLocked counts a wildcard subscription at non-zero view v:
// the first makes v effective for every name with variants. Callers hold
// t.mu for writing.
func (t *typeStore) wildcardViewOnLocked(v View, pre map[string]prebuilt) {
	if v.IsZero() {
		return
	}
	if t.wildViews[v]++; t.wildViews[v] > 1 {
		return
	}
	for name, nv := range t.vars {
		t.addViewLocked(name, nv, v, pre)
	}
}

// wildcardViewOffLocked uncounts a wildcard subscription at view v.
// Callers hold t.mu for writing.
func (t *typeStore) wildcardViewOffLocked(v View) {
	if v.IsZero() {
		return
	}
	if t.wildViews[v]--; t.wildViews[v] > 0 {
		return
	}
	delete(t.wildViews, v)
	for _, nv := range t.vars {
		if nv.named[v] == 0 {
			t.removeViewLocked(nv, v)
		}
	}
}

// variantsFor builds, outside the type lock, the variants a subscription at
// view v is about to need: for the names it starts naming, or for every
// name with variants when it turns a wildcard on. Like standInsFor, it
// keeps marshaling out of the write lock. Nil for the zero view.
func (t *typeStore) variantsFor(v View, index newNames, wildcardOn bool) map[string]prebuilt {
	if v.IsZero() {
		return nil
	}
	type todo struct {
		name string
		nv   *nameViews
		key  string
		at   time.Time
	}
	var work []todo
	t.mu.RLock()
	if len(t.vars) == 0 {
		t.mu.RUnlock()
		return nil
	}
	check := func(name string, nv *nameViews) {
		if _, known := nv.keys[v]; known {
			return
		}
		if key := nv.variants.Key(v); key != "" && nv.byKey[key] == nil {
			var at time.Time
			if plain := t.resources[name]; plain != nil {
				at = plain.ObservedAt
			}
			// A first request's own string may come here (newNames):
			// the variant keeps the store's.
			work = append(work, todo{t.internLocked(name), nv, key, at})
		}
	}
	if wildcardOn && t.wildViews[v] == 0 {
		for name, nv := range t.vars {
			check(name, nv)
		}
	} else {
		index.each(func(name string) {
			if nv := t.vars[name]; nv != nil {
				check(name, nv)
			}
		})
	}
	t.mu.RUnlock()
	if len(work) == 0 {
		return nil
	}
	out := make(map[string]prebuilt, len(work))
	for _, w := range work {
		if res, _ := t.buildVariant(w.name, w.nv.variants, v, w.at); res != nil {
			out[w.name] = prebuilt{nv: w.nv, key: w.key, res: res}
		}
	}
	return out
}

// variantPlan is one updated name with Variants in an Apply: the views
// seen subscribed to it before the write lock, their keys, and the variants
// built for them, by key.
type variantPlan struct {
	vs    Variants
	keys  map[View]string
	built map[string]*Resource
}

// planVariants computes, outside the write lock, the keys and variants of
// every updated name with Variants for the views subscribed to it. It
// returns the number of variants built and the errors of those that failed.
func (t *typeStore) planVariants(prepared map[string]*Resource, updates []ResourceUpdate, last map[string]int) (map[string]*variantPlan, int, []error) {
	var plans map[string]*variantPlan
	for name, r := range prepared {
		if r == nil || updates[last[name]].Variants == nil {
			continue
		}
		if plans == nil {
			plans = make(map[string]*variantPlan)
		}
		plans[name] = &variantPlan{vs: updates[last[name]].Variants, keys: make(map[View]string)}
	}
	if plans == nil {
		return nil, 0, nil
	}
	t.mu.RLock()
	for name, p := range plans {
		if nv := t.vars[name]; nv != nil {
			for v := range nv.named {
				p.keys[v] = ""
			}
		} else {
			for sub := range t.byName[name] {
				if !sub.view.IsZero() {
					p.keys[sub.view] = ""
				}
			}
		}
		for v := range t.wildViews {
			p.keys[v] = ""
		}
	}
	t.mu.RUnlock()

	built := 0
	var errs []error
	for name, p := range plans {
		r := prepared[name]
		views := make(map[string]View) // one view per key, to build it from
		for v := range p.keys {
			key := p.vs.Key(v)
			p.keys[v] = key
			if _, seen := views[key]; key != "" && !seen {
				views[key] = v
			}
		}
		if len(views) == 0 {
			continue
		}
		p.built = make(map[string]*Resource, len(views))
		for key, v := range views {
			res, err := t.buildVariant(name, p.vs, v, r.ObservedAt)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			built++
			p.built[key] = res
		}
	}
	return plans, built, errs
}

// installVariantsLocked replaces name's variants: nil p drops them (a
// resource without Variants, or deleted), else every view subscribing to
// the name gets its key from p (or, for a view that appeared since the
// plan, computed now) and the variant built for it. A variant whose version
// did not change keeps its *Resource. It returns the old nameViews, to tell
// which subscriptions' delivered versions changed. Callers hold t.mu for
// writing.
func (t *typeStore) installVariantsLocked(name string, p *variantPlan, plain *Resource) (old *nameViews) {
	old = t.vars[name]
	if old != nil {
		t.variantsHeld -= len(old.byKey)
		delete(t.vars, name)
	}
	if p == nil {
		return old
	}
	nv := newNameViews(p.vs)
	if old != nil {
		nv.named = old.named
	} else {
		for sub := range t.byName[name] {
			if !sub.view.IsZero() {
				nv.named[sub.view]++
			}
		}
	}
	t.vars[name] = nv
	add := func(v View) {
		if _, known := nv.keys[v]; known {
			return
		}
		key, planned := p.keys[v]
		if !planned {
			key = p.vs.Key(v)
		}
		if key != "" {
			vr := nv.byKey[key]
			if vr == nil {
				res := p.built[key]
				if res == nil && !planned {
					res, _ = t.buildVariant(name, p.vs, v, plain.ObservedAt)
				}
				if res != nil {
					if ov := oldVariant(old, key); ov != nil && ov.Version == res.Version {
						res = ov // unchanged: keep the resource its subscribers hold
					}
					vr = &variant{res: res}
					nv.byKey[key] = vr
					t.variantsHeld++
				}
			}
			if vr == nil {
				key = "" // Build failed: the plain resource
			} else {
				vr.views++
			}
		}
		nv.keys[v] = key
	}
	for v := range nv.named {
		add(v)
	}
	for v := range t.wildViews {
		add(v)
	}
	return old
}

// oldVariant returns the resource old held for key, or nil.
func oldVariant(old *nameViews, key string) *Resource {
	if old == nil {
		return nil
	}
	if vr := old.byKey[key]; vr != nil {
		return vr.res
	}
	return nil
}

// VariantInfo describes one variant of a name, for debug pages.
type VariantInfo struct {
	// Key is what the resource's Variants named it.
	Key      string
	Resource *Resource
	// Views is the number of distinct views served this variant; ViewList
	// lists at most MaxVariantViewsListed of them, sorted.
	Views    int
	ViewList []View
	// Subscriptions is the number of subscriptions served it (one that
	// names the resource and holds a wildcard counts twice).
	Subscriptions int
}

// MaxVariantViewsListed bounds VariantInfo.ViewList.
const MaxVariantViewsListed = 20

// Variants returns the variants held for a name, sorted by key; nil when
// its resource has no Variants or no view subscribed to it needs one. It
// copies and is meant for debug endpoints.
func (s *Store) Variants(typeURL, name string) []VariantInfo {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	nv := t.vars[name]
	if nv == nil || len(nv.byKey) == 0 {
		return nil
	}
	byKey := make(map[string]*VariantInfo, len(nv.byKey))
	for key, vr := range nv.byKey {
		byKey[key] = &VariantInfo{Key: key, Resource: vr.res}
	}
	for v, key := range nv.keys {
		info := byKey[key]
		if info == nil {
			continue
		}
		info.Views++
		info.Subscriptions += nv.named[v] + t.wildViews[v]
		info.ViewList = append(info.ViewList, v)
	}
	out := make([]VariantInfo, 0, len(byKey))
	for _, info := range byKey {
		sort.Slice(info.ViewList, func(i, j int) bool {
			a, b := info.ViewList[i], info.ViewList[j]
			return a.Zone < b.Zone || a.Zone == b.Zone && a.Node < b.Node
		})
		if len(info.ViewList) > MaxVariantViewsListed {
			info.ViewList = info.ViewList[:MaxVariantViewsListed]
		}
		out = append(out, *info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// VariantStats returns how many variants of a type the store holds now, and
// how many it has built (serialized) since it started.
func (s *Store) VariantStats(typeURL string) (held int, builds uint64) {
	t := s.lookup(typeURL)
	if t == nil {
		return 0, 0
	}
	t.mu.RLock()
	held = t.variantsHeld
	t.mu.RUnlock()
	return held, t.variantBuilds.Load()
}
