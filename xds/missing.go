package xds

import (
	"sort"
	"strings"
)

// Missing names are names some subscription names that have no resource:
// a typo in a client's configuration, a resource deleted while clients still
// name it, or one that does not exist yet. They are served as the type's
// stand-in (see RegisterType), which for deltaeds routes to nothing, so the
// store lets its users find them: MissingCount for a gauge, Missing for a
// debug listing, Absent and Subscription.MissingNames to say so when a client
// names one, and Suggest for the published names it may have meant.

// MissingName is one name that subscriptions name and that has no resource.
type MissingName struct {
	Name string
	// Subscriptions name it, in no particular order.
	Subscriptions []*Subscription
}

// MissingCount returns how many names of a type some subscription names that
// have no resource. Wildcard subscriptions name nothing. It is read from an
// index the store keeps anyway (the stand-ins), so it costs one lookup.
func (s *Store) MissingCount(typeURL string) int {
	t := s.lookup(typeURL)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.stand)
}

// Missing returns every name of a type that some subscription names and that
// has no resource, sorted by name, with the subscriptions naming it. It
// copies the index and is meant for debug endpoints, not for hot paths.
func (s *Store) Missing(typeURL string) []MissingName {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	out := make([]MissingName, 0, len(t.stand))
	for name := range t.stand {
		set := t.byName[name]
		m := MissingName{Name: name, Subscriptions: make([]*Subscription, 0, len(set))}
		for sub := range set {
			m.Subscriptions = append(m.Subscriptions, sub)
		}
		out = append(out, m)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Absent returns, in their order, the names of names that have no resource
// of the type, at most limit of them (0 means no bound). The wildcard is
// never absent. It takes the type's read lock once for the whole list.
func (s *Store) Absent(typeURL string, names []string, limit int) []string {
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	var out []string
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, n := range names {
		if n == Wildcard || t.resources[n] != nil {
			continue
		}
		out = append(out, n)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out
}

// MissingNames returns, sorted, the names the subscription names that have
// no resource, at most limit of them (0 means no bound); nil once closed.
func (sub *Subscription) MissingNames(limit int) []string {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return nil
	}
	var out []string
	t := sub.t
	t.mu.RLock()
	for n, st := range sub.names {
		if st.named && t.resources[n] == nil {
			out = append(out, n)
		}
	}
	t.mu.RUnlock()
	sort.Strings(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// GroupOf returns the group of a name for Suggest: the part before its first
// "/", or "" when it has none. It is a plain string rule; for deltaeds'
// names (NAMESPACE/SERVICE[/PORT]) the group is the namespace, so a name is
// only ever compared with names of its own namespace.
func GroupOf(name string) string {
	group, _, found := strings.Cut(name, "/")
	if !found {
		return ""
	}
	return group
}

// Bounds on what Suggest does, so that a client naming many missing names
// (or very long ones) cannot make it expensive.
const (
	// MaxSuggestGroup is the largest group Suggest searches; a larger one
	// gets no suggestions.
	MaxSuggestGroup = 10_000
	// maxSuggestNameLen is the longest name Suggest compares, asked for or
	// candidate: Kubernetes names stay well below it.
	maxSuggestNameLen = 256
)

// maxSuggestDistance is the largest edit distance at which a name is still
// suggested for name: half its length, at least 2. Farther names are other
// names, not what the client meant.
func maxSuggestDistance(name string) int {
	return max(2, len(name)/2)
}

// Suggest returns up to n published names of a type closest to name by
// edit distance (Levenshtein, on bytes), closest first and, at equal
// distance, in name order. It compares name only with the names of its group
// (see GroupOf), never with name itself, and only those within a distance of
// half name's length (at least 2). A group of more than
// MaxSuggestGroup names, or a name longer than 256 bytes, gets none. The
// type's read lock is held only to copy the group.
func (s *Store) Suggest(typeURL, name string, n int) []string {
	if n <= 0 || len(name) > maxSuggestNameLen {
		return nil
	}
	t := s.lookup(typeURL)
	if t == nil {
		return nil
	}
	t.mu.RLock()
	group := t.groups[GroupOf(name)]
	if len(group) == 0 || len(group) > MaxSuggestGroup {
		t.mu.RUnlock()
		return nil
	}
	candidates := make([]string, 0, len(group))
	for n := range group {
		candidates = append(candidates, n)
	}
	t.mu.RUnlock()

	return Closest(name, candidates, n)
}

// Closest returns up to n of candidates closest to name by edit distance
// (Levenshtein, on bytes), closest first and, at equal distance, in name
// order, under the rules of Suggest: only candidates of name's group (see
// GroupOf), never name itself, within half name's length (at least 2), and
// nothing for names longer than 256 bytes. It serves Suggest and any caller
// holding a list of published names (`deltaeds check`).
func Closest(name string, candidates []string, n int) []string {
	if n <= 0 || len(name) > maxSuggestNameLen {
		return nil
	}
	group := GroupOf(name)
	type scored struct {
		name string
		dist int
	}
	var best []scored // sorted, at most n
	limit := maxSuggestDistance(name)
	var row []int
	for _, c := range candidates {
		if c == name || len(c) > maxSuggestNameLen || GroupOf(c) != group {
			continue
		}
		bound := limit
		if len(best) == n {
			bound = best[len(best)-1].dist // a farther name cannot enter
		}
		d, ok := editDistance(name, c, bound, &row)
		if !ok {
			continue
		}
		i := sort.Search(len(best), func(i int) bool {
			return best[i].dist > d || best[i].dist == d && best[i].name > c
		})
		if i == n {
			continue
		}
		if len(best) < n {
			best = append(best, scored{})
		}
		copy(best[i+1:], best[i:])
		best[i] = scored{c, d}
	}
	out := make([]string, len(best))
	for i, b := range best {
		out[i] = b.name
	}
	return out
}

// editDistance returns the Levenshtein distance between a and b and true
// when it is at most bound; false, early, when it is more. It computes only
// the band of cells within bound of the diagonal, so its cost is about
// len(a)*(2*bound+1). row is scratch space reused between calls.
func editDistance(a, b string, bound int, row *[]int) (int, bool) {
	if d := len(a) - len(b); d > bound || -d > bound {
		return 0, false
	}
	const far = 1 << 30
	n := len(b)
	if cap(*row) < n+1 {
		*row = make([]int, n+1)
	}
	prev := (*row)[:n+1]
	for j := range prev {
		if j <= bound {
			prev[j] = j
		} else {
			prev[j] = far
		}
	}
	for i := 1; i <= len(a); i++ {
		lo, hi := max(1, i-bound), min(n, i+bound)
		// diag is prev[lo-1] before this row overwrites it.
		diag := prev[lo-1]
		if lo == 1 {
			if i <= bound {
				prev[0] = i
			} else {
				prev[0] = far
			}
		} else {
			prev[lo-1] = far
		}
		rowMin := prev[lo-1]
		for j := lo; j <= hi; j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(diag+cost, prev[j]+1, prev[j-1]+1)
			diag = prev[j]
			prev[j] = v
			rowMin = min(rowMin, v)
		}
		if hi < n {
			prev[hi+1] = far
		}
		if rowMin > bound {
			return 0, false
		}
	}
	if d := prev[n]; d <= bound {
		return d, true
	}
	return 0, false
}

// groupLocked adds a name whose resource was created to its group; callers
// hold t.mu for writing.
func (t *typeStore) groupLocked(name string) {
	g := GroupOf(name)
	set := t.groups[g]
	if set == nil {
		set = make(map[string]struct{})
		t.groups[g] = set
	}
	set[name] = struct{}{}
}

// ungroupLocked drops a name whose resource was deleted from its group;
// callers hold t.mu for writing.
func (t *typeStore) ungroupLocked(name string) {
	g := GroupOf(name)
	set := t.groups[g]
	delete(set, name)
	if len(set) == 0 {
		delete(t.groups, g)
	}
}
