package xds

import (
	"strings"
	"testing"
	"unsafe"
)

// TestSubscriptionKeepsStoreNames: the names a subscription keeps are the
// store's own strings, resource or stand-in, also for names declared in
// initial_resource_versions and subscribed, so that a request's decoded
// strings are not kept per stream; a name the store does not hold is kept as
// given.
func TestSubscriptionKeepsStoreNames(t *testing.T) {
	s := NewStore()
	s.RegisterType(claType, emptyCLA)
	if _, err := s.Apply(claType, []ResourceUpdate{set("default/a", 1), set("default/b", 1)}); err != nil {
		t.Fatal(err)
	}
	s.MarkSynced()
	// A stand-in comes to exist for "default/missing" through a first
	// subscriber, whose string it keeps.
	first := s.Subscribe(claType, make(chan struct{}, 1), 0)
	defer first.Close()
	if err := first.Update(SubscriptionChange{Subscribe: []string{strings.Clone("default/missing")}}); err != nil {
		t.Fatal(err)
	}

	// Fresh copies, as decoding a request makes them.
	fresh := func(n string) string { return strings.Clone(n) }
	sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
	defer sub.Close()
	// A reconnecting Envoy declares what it holds and names it again, each
	// in strings of its own.
	change := SubscriptionChange{
		Subscribe:       []string{fresh("default/a"), fresh("default/b"), fresh("default/missing"), fresh("default/unknown")},
		InitialVersions: map[string]string{fresh("default/b"): "some-version"},
	}
	if err := sub.Update(change); err != nil {
		t.Fatal(err)
	}

	storeName := func(n string) string {
		s.mu.RLock()
		typ := s.types[claType]
		s.mu.RUnlock()
		typ.mu.RLock()
		defer typ.mu.RUnlock()
		if r := typ.resources[n]; r != nil {
			return r.Name
		}
		if r := typ.stand[n]; r != nil {
			return r.Name
		}
		t.Fatalf("store holds no %q", n)
		return ""
	}
	sub.mu.Lock()
	kept := make(map[string]string, len(sub.names))
	for n := range sub.names {
		kept[n] = n
	}
	sub.mu.Unlock()
	for _, n := range []string{"default/a", "default/b", "default/missing"} {
		k, ok := kept[n]
		if !ok {
			t.Fatalf("subscription lost %q; keeps %v", n, kept)
		}
		if unsafe.StringData(k) != unsafe.StringData(storeName(n)) {
			t.Errorf("%q: the subscription keeps its own copy, not the store's string", n)
		}
	}
	// A name the store did not hold is kept as given, and its stand-in,
	// built for this subscriber, is named with that same string.
	if k := kept["default/unknown"]; unsafe.StringData(k) != unsafe.StringData(change.Subscribe[3]) ||
		unsafe.StringData(storeName("default/unknown")) != unsafe.StringData(k) {
		t.Errorf("%q: kept %q, want the request's string shared with its stand-in", "default/unknown", k)
	}
}
