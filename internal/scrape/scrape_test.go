package scrape

import (
	"math"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	text := `# HELP deltaeds_xds_streams Connected streams.
# TYPE deltaeds_xds_streams gauge
deltaeds_xds_streams 5
# TYPE deltaeds_xds_nacks_total counter
deltaeds_xds_nacks_total{type_url="type.googleapis.com/x"} 2
deltaeds_xds_nacks_total{type_url="type.googleapis.com/y"} 3
deltaeds_translate_skipped_total{reason="fqdn_slice",note="a \"quoted\", comma"} 1e+00
# TYPE h histogram
h_bucket{le="0.1"} 2
h_bucket{le="0.2"} 6
h_bucket{le="+Inf"} 8
h_sum 1.2
h_count 8
`
	m, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		kv   []string
		want float64
	}{
		{"deltaeds_xds_streams", nil, 5},
		{"deltaeds_xds_nacks_total", nil, 5},
		{"deltaeds_xds_nacks_total", []string{"type_url", "type.googleapis.com/y"}, 3},
		{"deltaeds_translate_skipped_total", []string{"reason", "fqdn_slice", "note", `a "quoted", comma`}, 1},
		{"absent_total", nil, 0},
		{"h_count", nil, 8},
		{"h_sum", nil, 1.2},
		{"h_bucket", []string{"le", "+Inf"}, 8},
	} {
		if got := m.Value(tc.name, tc.kv...); got != tc.want {
			t.Errorf("Value(%s, %v) = %v, want %v", tc.name, tc.kv, got, tc.want)
		}
	}
	if q := m.Quantile("h", 0.5); math.Abs(q-0.15) > 1e-9 {
		t.Errorf("median = %v, want 0.15 (4th of 8 in the 0.1-0.2 bucket)", q)
	}
	if q := m.Quantile("h", 0.99); q != 0.2 {
		t.Errorf("p99 in the +Inf bucket = %v, want the last finite bound 0.2", q)
	}
	if q := m.Quantile("nope", 0.5); !math.IsNaN(q) {
		t.Errorf("quantile of an absent histogram = %v, want NaN", q)
	}
	if _, err := Parse(strings.NewReader("x{a=\"unterminated} 1\n")); err == nil {
		t.Error("no error for an unterminated label")
	}
}
