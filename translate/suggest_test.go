package translate

import (
	"slices"
	"testing"
)

func TestClosest(t *testing.T) {
	published := []string{"shop/web/http", "shop/web/metrics", "shop/api/http", "shop/cart", "other/web/https", "shop/completely-different/grpc"}
	tests := []struct {
		name string
		n    int
		want []string
	}{
		{"shop/web/https", 3, []string{"shop/web/http", "shop/api/http", "shop/web/metrics"}},
		{"shop/web/https", 1, []string{"shop/web/http"}},
		{"shop/web/http", 3, []string{"shop/api/http"}},                   // itself is not a suggestion
		{"shop/cart/http", 3, []string{"shop/api/http", "shop/web/http"}}, // shop/cart is 5 edits away: too far
		{"shop/api/htp", 3, []string{"shop/api/http", "shop/web/http"}},
		{"nowhere/web/http", 3, []string{}}, // other namespaces are never suggested
		{"shop/zzzzzzzzzz/zzzz", 3, []string{}},
		{"shop/web/https", 0, nil},
	}
	for _, tt := range tests {
		if got := Closest(tt.name, published, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("Closest(%q, %d) = %q, want %q", tt.name, tt.n, got, tt.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b  string
		limit int
		want  int
	}{
		{"", "", 3, 0},
		{"http", "https", 3, 1},
		{"kitten", "sitting", 5, 3},
		{"kitten", "sitting", 2, 3}, // over the limit: limit+1
		{"a", "abcdefgh", 3, 4},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b, tt.limit); got != tt.want {
			t.Errorf("editDistance(%q, %q, %d) = %d, want %d", tt.a, tt.b, tt.limit, got, tt.want)
		}
	}
}

func FuzzClosest(f *testing.F) {
	f.Add("shop/web/https", "shop/web/http")
	f.Add("", "a/b")
	f.Fuzz(func(t *testing.T, name, other string) {
		got := Closest(name, []string{other, name}, 2)
		if len(got) > 1 || len(got) == 1 && got[0] != other {
			t.Fatalf("Closest(%q, [%q]) = %q", name, other, got)
		}
		if d := editDistance(name, other, 1<<20); d != editDistance(other, name, 1<<20) {
			t.Fatalf("editDistance not symmetric for %q, %q", name, other)
		}
	})
}
