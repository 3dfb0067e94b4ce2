package translate

import (
	"slices"
	"strings"
)

// maxSuggestionCandidates bounds the names Closest compares against, so that
// a namespace of tens of thousands of Services costs a bounded amount of work
// per lookup.
const maxSuggestionCandidates = 10_000

// Closest returns up to n of published that are nearest to name by edit
// distance, nearest first (ties by name), among those in name's namespace
// (the part before the first "/"). It is for "did you mean" hints on names a
// client or a bootstrap asks for that nothing publishes: a typo such as
// shop/web/https for shop/web/http. Names too far off to be a typo (more than
// a third of the longer name's length, and at least 3 edits) are left out.
func Closest(name string, published []string, n int) []string {
	if n <= 0 {
		return nil
	}
	ns, _, _ := strings.Cut(name, "/")
	type cand struct {
		name string
		dist int
	}
	var cands []cand
	seen := 0
	for _, p := range published {
		if p == name {
			continue
		}
		if pns, _, _ := strings.Cut(p, "/"); pns != ns {
			continue
		}
		if seen++; seen > maxSuggestionCandidates {
			break
		}
		limit := max(3, max(len(name), len(p))/3)
		if d := editDistance(name, p, limit); d <= limit {
			cands = append(cands, cand{p, d})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, 0, min(n, len(cands)))
	for _, c := range cands[:min(n, len(cands))] {
		out = append(out, c.name)
	}
	return out
}

// editDistance is the Levenshtein distance between a and b in bytes, or
// limit+1 as soon as it must exceed limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > limit {
			return limit + 1
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
