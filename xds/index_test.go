package xds

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// fresh copies a change's names into strings of their own, as decoding a
// request makes them.
func fresh(c SubscriptionChange) SubscriptionChange {
	out := SubscriptionChange{Unsubscribe: c.Unsubscribe}
	for _, n := range c.Subscribe {
		out.Subscribe = append(out.Subscribe, strings.Clone(n))
	}
	if c.InitialVersions != nil {
		out.InitialVersions = make(map[string]string, len(c.InitialVersions))
		for n, v := range maps.All(c.InitialVersions) {
			out.InitialVersions[strings.Clone(n)] = v
		}
	}
	return out
}

// indexedFor returns the names the type's index lists sub under, sorted,
// and whether it is in the wildcard set.
func indexedFor(s *Store, sub *Subscription) (names []string, wildcard bool) {
	t := s.lookup(claType)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for n, set := range t.byName {
		if _, ok := set[sub]; ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	_, wildcard = t.wildcard[sub]
	return names, wildcard
}

// A subscription's first request is indexed from the request's own names
// unless one repeats (newNames): it must index exactly what the same request
// indexes when it is not the first, which goes through a list, and the index
// keeps the store's strings, not the request's.
func TestFirstRequestIndexesWhatItNames(t *testing.T) {
	const other = "default/zz-other"
	for _, c := range []struct {
		name     string
		change   SubscriptionChange
		want     []string
		wildcard bool
	}{
		{"names", SubscriptionChange{Subscribe: []string{"default/a", "default/b"}}, []string{"default/a", "default/b"}, false},
		{"a name twice", SubscriptionChange{Subscribe: []string{"default/a", "default/a", "default/m"}}, []string{"default/a", "default/m"}, false},
		{"declared, not named", SubscriptionChange{Subscribe: []string{Wildcard, "default/a"},
			InitialVersions: map[string]string{"default/a": "v", "default/c": "v"}}, []string{"default/a"}, true},
		{"declared absent and named", SubscriptionChange{Subscribe: []string{"default/m"},
			InitialVersions: map[string]string{"default/m": ""}}, []string{"default/m"}, false},
		{"unsubscribed and named", SubscriptionChange{Subscribe: []string{"default/a"}, Unsubscribe: []string{"default/a", "default/b"}},
			[]string{"default/a"}, false},
		{"wildcard only", SubscriptionChange{Subscribe: []string{Wildcard}}, nil, true},
		{"wildcards and names twice", SubscriptionChange{Subscribe: []string{Wildcard, "default/a", Wildcard, "default/m", "default/a", "default/b", "default/m"}},
			[]string{"default/a", "default/b", "default/m"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewStore()
			s.RegisterType(claType, emptyCLA)
			if _, err := s.Apply(claType, []ResourceUpdate{set("default/a", 1), set("default/b", 1), set(other, 1)}); err != nil {
				t.Fatal(err)
			}
			first := s.Subscribe(claType, make(chan struct{}, 1), 0)
			defer first.Close()
			if err := first.Update(fresh(c.change)); err != nil {
				t.Fatal(err)
			}
			names, wildcard := indexedFor(s, first)
			typ := s.lookup(claType)
			typ.mu.RLock()
			for n := range typ.byName {
				if r := typ.resources[n]; r != nil && unsafe.StringData(r.Name) != unsafe.StringData(n) {
					t.Errorf("the index keeps %q as the request spelled it", n)
				}
			}
			typ.mu.RUnlock()
			if !slices.Equal(names, c.want) || wildcard != c.wildcard {
				t.Errorf("first request: indexed %v, wildcard %v; want %v, %v", names, wildcard, c.want, c.wildcard)
			}

			later := s.Subscribe(claType, make(chan struct{}, 1), 0)
			defer later.Close()
			if err := later.Update(SubscriptionChange{Subscribe: []string{other}}); err != nil {
				t.Fatal(err)
			}
			if err := later.Update(fresh(c.change)); err != nil {
				t.Fatal(err)
			}
			want := append(slices.Clone(c.want), other)
			slices.Sort(want)
			names, wildcard = indexedFor(s, later)
			if !slices.Equal(names, want) || wildcard != c.wildcard {
				t.Errorf("second request: indexed %v, wildcard %v; want %v, %v", names, wildcard, want, c.wildcard)
			}
			if got := s.MissingCount(claType); (got == 1) != slices.Contains(c.want, "default/m") {
				t.Errorf("%d missing names", got)
			}
		})
	}
}
