package xds

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestMissingFollowsSubscriptions: the missing names (named by a
// subscription, without a resource) follow subscribe, unsubscribe, apply,
// delete and close, with and without a stand-in, and list the subscriptions
// that name them.
func TestMissingFollowsSubscriptions(t *testing.T) {
	type op struct {
		sub         int    // which subscription; -1 for the store
		subscribe   string // comma-separated
		unsubscribe string
		set, del    string
		close       bool
		want        string // "name:subs,..." sorted by name
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"a name without a resource is missing until it is set", []op{
			{sub: 0, subscribe: "shop/web/https", want: "shop/web/https:0"},
			{sub: -1, set: "shop/web/http", want: "shop/web/https:0"},
			{sub: -1, set: "shop/web/https", want: ""},
		}},
		{"a deleted resource a subscription names becomes missing", []op{
			{sub: -1, set: "a/x"},
			{sub: 0, subscribe: "a/x", want: ""},
			{sub: -1, del: "a/x", want: "a/x:0"},
			{sub: -1, set: "a/x", want: ""},
		}},
		{"a deleted resource nobody names is not missing", []op{
			{sub: -1, set: "a/x"},
			{sub: 0, subscribe: "*", want: ""},
			{sub: -1, del: "a/x", want: ""},
		}},
		{"the wildcard names nothing", []op{
			{sub: 0, subscribe: "*", want: ""},
			{sub: 0, subscribe: "a/y", want: "a/y:0"},
			{sub: 0, unsubscribe: "*", want: "a/y:0"},
		}},
		{"missing until the last subscriber unsubscribes", []op{
			{sub: 0, subscribe: "a/x,a/y", want: "a/x:0,a/y:0"},
			{sub: 1, subscribe: "a/x", want: "a/x:0 1,a/y:0"},
			{sub: 0, unsubscribe: "a/x", want: "a/x:1,a/y:0"},
			{sub: 1, unsubscribe: "a/x", want: "a/y:0"},
		}},
		{"closing forgets what it named", []op{
			{sub: 0, subscribe: "a/x", want: "a/x:0"},
			{sub: 1, subscribe: "a/x,b/z", want: "a/x:0 1,b/z:1"},
			{sub: 1, close: true, want: "a/x:0"},
			{sub: 0, close: true, want: ""},
		}},
		{"subscribed and unsubscribed in one request", []op{
			{sub: 0, subscribe: "a/x", unsubscribe: "a/x", want: "a/x:0"},
			{sub: 0, unsubscribe: "a/x", want: ""},
		}},
	}
	for _, standIn := range []AbsentFunc{nil, emptyCLA} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/stand-in=%v", tc.name, standIn != nil), func(t *testing.T) {
				s := NewStore()
				s.RegisterType(claType, standIn)
				s.MarkSynced()
				var subs [2]*Subscription
				for i := range subs {
					subs[i] = s.Subscribe(claType, make(chan struct{}, 1), 0)
					defer subs[i].Close()
				}
				index := map[*Subscription]int{subs[0]: 0, subs[1]: 1}
				for step, o := range tc.ops {
					switch {
					case o.sub < 0 && o.set != "":
						if _, err := s.Apply(claType, []ResourceUpdate{set(o.set, 1)}); err != nil {
							t.Fatal(err)
						}
					case o.sub < 0 && o.del != "":
						if _, err := s.Apply(claType, []ResourceUpdate{del(o.del)}); err != nil {
							t.Fatal(err)
						}
					case o.close:
						subs[o.sub].Close()
					default:
						if err := subs[o.sub].Update(SubscriptionChange{Subscribe: split(o.subscribe), Unsubscribe: split(o.unsubscribe)}); err != nil {
							t.Fatal(err)
						}
					}
					var got []string
					for _, m := range s.Missing(claType) {
						var ids []string
						for _, sub := range m.Subscriptions {
							ids = append(ids, fmt.Sprint(index[sub]))
						}
						slices.Sort(ids)
						got = append(got, m.Name+":"+strings.Join(ids, " "))
					}
					if g := strings.Join(got, ","); g != o.want {
						t.Fatalf("step %d: missing %q, want %q", step, g, o.want)
					}
					if n := s.MissingCount(claType); n != len(got) {
						t.Fatalf("step %d: MissingCount %d, Missing lists %d", step, n, len(got))
					}
				}
			})
		}
	}
	if s := NewStore(); s.MissingCount("unknown") != 0 || s.Missing("unknown") != nil || s.HasType("unknown") {
		t.Error("reading missing names of an unknown type registered it")
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// TestAbsentAndMissingNames: what delta asks when a client names names.
func TestAbsentAndMissingNames(t *testing.T) {
	s := NewStore()
	s.RegisterType(claType, emptyCLA)
	if _, err := s.Apply(claType, []ResourceUpdate{set("a/x", 1), set("a/y", 1)}); err != nil {
		t.Fatal(err)
	}
	names := []string{"a/z", "a/x", Wildcard, "b/q", "a/y", "a/w"}
	if got := s.Absent(claType, names, 0); !slices.Equal(got, []string{"a/z", "b/q", "a/w"}) {
		t.Errorf("Absent = %q", got)
	}
	if got := s.Absent(claType, names, 2); !slices.Equal(got, []string{"a/z", "b/q"}) {
		t.Errorf("Absent(limit 2) = %q", got)
	}
	if got := s.Absent("unknown", names, 0); got != nil {
		t.Errorf("Absent of an unknown type = %q", got)
	}
	sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
	if err := sub.Update(SubscriptionChange{Subscribe: []string{Wildcard, "a/x", "b/q", "a/w", "a/z"}}); err != nil {
		t.Fatal(err)
	}
	if got := sub.MissingNames(0); !slices.Equal(got, []string{"a/w", "a/z", "b/q"}) {
		t.Errorf("MissingNames = %q", got)
	}
	if got := sub.MissingNames(1); !slices.Equal(got, []string{"a/w"}) {
		t.Errorf("MissingNames(1) = %q", got)
	}
	sub.Close()
	if got := sub.MissingNames(0); got != nil {
		t.Errorf("MissingNames after Close = %q", got)
	}
}

// TestSuggest: the closest published names of the same group, by edit
// distance, at most n, never far ones, never for a huge group.
func TestSuggest(t *testing.T) {
	s := NewStore()
	s.RegisterType(claType, emptyCLA)
	var ups []ResourceUpdate
	for _, n := range []string{
		"shop/web/http", "shop/web/grpc", "shop/api/http", "shop/cart", "shop/checkout/http",
		"other/web/https", "other/web/http", "noslash", "noslashes", "shop/wbe/htpp",
	} {
		ups = append(ups, set(n, 1))
	}
	if _, err := s.Apply(claType, ups); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(claType, []ResourceUpdate{del("shop/wbe/htpp")}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		n    int
		want []string
	}{
		{"shop/web/https", 3, []string{"shop/web/http", "shop/api/http", "shop/web/grpc"}}, // 1, 4, 4; other/ is another group
		{"shop/web/https", 1, []string{"shop/web/http"}},
		{"shop/web/http", 3, []string{"shop/api/http", "shop/web/grpc"}}, // itself excluded; shop/cart is 7 away
		{"shop/wbe/http", 2, []string{"shop/web/http", "shop/api/http"}}, // deleted names are not published
		{"shop/crat", 3, []string{"shop/cart"}},
		{"shop/cart/http", 3, []string{"shop/api/http", "shop/web/http", "shop/cart"}}, // 3, 4, 5
		{"shop/zzzzzzzzzzzzzzzzzz", 3, nil},
		{"nosash", 3, []string{"noslash", "noslashes"}},
		{"nowhere/web/http", 3, nil},
		{"shop/web/https", 0, nil},
		{strings.Repeat("shop/", 60), 3, nil},
	}
	for _, tc := range tests {
		if got := s.Suggest(claType, tc.name, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("Suggest(%q, %d) = %q, want %q", tc.name, tc.n, got, tc.want)
		}
	}
	if got := s.Suggest("unknown", "shop/web/http", 3); got != nil {
		t.Errorf("Suggest of an unknown type = %q", got)
	}

	ups = ups[:0]
	for i := range MaxSuggestGroup + 1 {
		ups = append(ups, set(fmt.Sprintf("huge/svc-%d", i), 1))
	}
	if _, err := s.Apply(claType, ups); err != nil {
		t.Fatal(err)
	}
	if got := s.Suggest(claType, "huge/svc-1x", 3); got != nil {
		t.Errorf("a group of %d names was searched: %q", MaxSuggestGroup+1, got)
	}
	if _, err := s.Apply(claType, []ResourceUpdate{del("huge/svc-0")}); err != nil {
		t.Fatal(err)
	}
	if got := s.Suggest(claType, "huge/svc-1x", 3); !slices.Equal(got, []string{"huge/svc-1", "huge/svc-10", "huge/svc-11"}) {
		t.Errorf("a group of %d names: %q", MaxSuggestGroup, got)
	}
}

func TestGroupOf(t *testing.T) {
	for name, want := range map[string]string{"shop/web/http": "shop", "shop/": "shop", "/x": "", "plain": "", "": ""} {
		if got := GroupOf(name); got != want {
			t.Errorf("GroupOf(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestEditDistance compares the banded distance with the textbook one.
func TestEditDistance(t *testing.T) {
	naive := func(a, b string) int {
		prev := make([]int, len(b)+1)
		for j := range prev {
			prev[j] = j
		}
		for i := 1; i <= len(a); i++ {
			cur := make([]int, len(b)+1)
			cur[0] = i
			for j := 1; j <= len(b); j++ {
				cost := 1
				if a[i-1] == b[j-1] {
					cost = 0
				}
				cur[j] = min(prev[j-1]+cost, prev[j]+1, cur[j-1]+1)
			}
			prev = cur
		}
		return prev[len(b)]
	}
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = "abc/"[rng.IntN(4)]
		}
		return string(b)
	}
	var row []int
	for range 20000 {
		a, b, bound := word(), word(), rng.IntN(8)
		want := naive(a, b)
		d, ok := editDistance(a, b, bound, &row)
		if ok != (want <= bound) || ok && d != want {
			t.Fatalf("editDistance(%q, %q, %d) = %d %v, want %d", a, b, bound, d, ok, want)
		}
	}
}

func BenchmarkSuggest(b *testing.B) {
	s := NewStore()
	s.RegisterType(claType, emptyCLA)
	var ups []ResourceUpdate
	for i := range MaxSuggestGroup {
		ups = append(ups, set(fmt.Sprintf("shop/service-%d/http", i), 1))
	}
	if _, err := s.Apply(claType, ups); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Suggest(claType, "shop/service-12x/https", 3)
	}
}

// TestClosest: the ranking Suggest uses, over a plain list holding several groups.
func TestClosest(t *testing.T) {
	published := []string{"shop/web/http", "shop/web/metrics", "shop/api/http", "other/web/https", "shop/web/https"}
	tests := []struct {
		name string
		n    int
		want []string
	}{
		{"shop/web/htps", 2, []string{"shop/web/https", "shop/web/http"}}, // 1 edit, then 2
		{"shop/web/https", 1, []string{"shop/web/http"}},                  // never itself
		{"nowhere/web/https", 3, []string{}},                              // only its own group
		{"shop/web/https", 0, nil},
	}
	for _, tt := range tests {
		if got := Closest(tt.name, published, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("Closest(%q, %d) = %q, want %q", tt.name, tt.n, got, tt.want)
		}
	}
}
