package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text format.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Metrics holds a scrape of /metrics by metric name (histograms appear as their _bucket, _sum
// and _count series, as in the text format).
type Metrics map[string][]Sample

// ParseMetrics reads the Prometheus text exposition format. It is deliberately small: it reads
// what client_golang writes (no timestamps needed, escapes in label values honoured).
func ParseMetrics(text []byte) (Metrics, error) {
	m := make(Metrics)
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, rest, err := splitSeries(line)
		if err != nil {
			return nil, fmt.Errorf("harness: /metrics line %d %q: %w", n, line, err)
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("harness: /metrics line %d %q: no value", n, line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("harness: /metrics line %d %q: %w", n, line, err)
		}
		m[name] = append(m[name], Sample{Labels: labels, Value: v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("harness: reading /metrics: %w", err)
	}
	return m, nil
}

func splitSeries(line string) (name string, labels map[string]string, rest string, err error) {
	i := strings.IndexAny(line, "{ \t")
	if i < 0 {
		return "", nil, "", fmt.Errorf("no value")
	}
	name, rest = line[:i], line[i:]
	labels = map[string]string{}
	if rest[0] != '{' {
		return name, labels, rest, nil
	}
	rest = rest[1:]
	for {
		rest = strings.TrimLeft(rest, " ,")
		if rest == "" {
			return "", nil, "", fmt.Errorf("unterminated labels")
		}
		if rest[0] == '}' {
			return name, labels, rest[1:], nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq < 0 || eq+1 >= len(rest) || rest[eq+1] != '"' {
			return "", nil, "", fmt.Errorf("bad label")
		}
		key := strings.TrimSpace(rest[:eq])
		rest = rest[eq+2:]
		var val strings.Builder
		j := 0
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' && j+1 < len(rest) {
				j++
				switch rest[j] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[j])
				}
				continue
			}
			val.WriteByte(rest[j])
		}
		if j >= len(rest) {
			return "", nil, "", fmt.Errorf("unterminated label value")
		}
		labels[key] = val.String()
		rest = rest[j+1:]
	}
}

// Has reports whether the metric appears at all.
func (m Metrics) Has(name string) bool { return len(m[name]) > 0 }

// Value sums the samples of name whose labels include every pair of kv ("key", "value", ...).
// A metric that is absent sums to 0: counters with labels appear only once incremented.
func (m Metrics) Value(name string, kv ...string) float64 {
	sum := 0.0
outer:
	for _, s := range m[name] {
		for i := 0; i+1 < len(kv); i += 2 {
			if s.Labels[kv[i]] != kv[i+1] {
				continue outer
			}
		}
		sum += s.Value
	}
	return sum
}

// Quantile estimates the q-quantile of a histogram from its cumulative buckets, by linear
// interpolation within the bucket holding it, as Prometheus' histogram_quantile does. It returns
// NaN when the histogram is absent or empty.
func (m Metrics) Quantile(name string, q float64) float64 {
	type bucket struct{ le, count float64 }
	var bs []bucket
	for _, s := range m[name+"_bucket"] {
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, s.Value})
	}
	if len(bs) == 0 {
		return math.NaN()
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	total := bs[len(bs)-1].count
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return prevLE
			}
			if b.count == prevCount {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount)
		}
		prevLE, prevCount = b.le, b.count
	}
	return prevLE
}
