// Package scrape reads a Prometheus /metrics page for tests: parsed by
// github.com/prometheus/common/expfmt, flattened into series by name as the text format shows
// them (a histogram as its _bucket, _sum and _count series), with sums over label matches and
// histogram quantiles.
//
// It must never be imported by the product binary, and never judges values: callers assert.
package scrape

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series of a scrape: its labels and value.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Metrics holds a scrape by series name (histograms appear as their _bucket, _sum and _count
// series, summaries as the quantile series and _sum and _count, as in the text format).
type Metrics map[string][]Sample

// Parse reads the Prometheus text exposition format.
func Parse(r io.Reader) (Metrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("scrape: parsing /metrics: %w", err)
	}
	m := make(Metrics)
	for name, f := range families {
		for _, mt := range f.GetMetric() {
			labels := make(map[string]string, len(mt.GetLabel()))
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			m.add(name, f.GetType(), labels, mt)
		}
	}
	return m, nil
}

// add flattens one metric into the series the text format shows for it.
func (m Metrics) add(name string, typ dto.MetricType, labels map[string]string, mt *dto.Metric) {
	with := func(k, v string) map[string]string {
		l := make(map[string]string, len(labels)+1)
		for lk, lv := range labels {
			l[lk] = lv
		}
		l[k] = v
		return l
	}
	switch typ {
	case dto.MetricType_COUNTER:
		m[name] = append(m[name], Sample{labels, mt.GetCounter().GetValue()})
	case dto.MetricType_GAUGE:
		m[name] = append(m[name], Sample{labels, mt.GetGauge().GetValue()})
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		h := mt.GetHistogram()
		inf := false
		for _, b := range h.GetBucket() {
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
			m[name+"_bucket"] = append(m[name+"_bucket"], Sample{with("le", formatBound(b.GetUpperBound())), float64(b.GetCumulativeCount())})
		}
		if !inf {
			m[name+"_bucket"] = append(m[name+"_bucket"], Sample{with("le", "+Inf"), float64(h.GetSampleCount())})
		}
		m[name+"_sum"] = append(m[name+"_sum"], Sample{labels, h.GetSampleSum()})
		m[name+"_count"] = append(m[name+"_count"], Sample{labels, float64(h.GetSampleCount())})
	case dto.MetricType_SUMMARY:
		s := mt.GetSummary()
		for _, q := range s.GetQuantile() {
			m[name] = append(m[name], Sample{with("quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)), q.GetValue()})
		}
		m[name+"_sum"] = append(m[name+"_sum"], Sample{labels, s.GetSampleSum()})
		m[name+"_count"] = append(m[name+"_count"], Sample{labels, float64(s.GetSampleCount())})
	default: // untyped
		m[name] = append(m[name], Sample{labels, mt.GetUntyped().GetValue()})
	}
}

func formatBound(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(le, 'g', -1, 64)
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
