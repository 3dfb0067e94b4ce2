package watch

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/deltaeds/deltaeds/translate"
)

// Metrics are the watcher's counters and histograms.
type Metrics struct {
	Events            *prometheus.CounterVec // by event kind
	UnlabelledSlices  prometheus.Counter
	WatchErrors       prometheus.Counter
	TranslateDuration prometheus.Histogram
	Skipped           *prometheus.CounterVec // by reason
	CLAChanges        prometheus.Counter
	ApplyErrors       prometheus.Counter
}

// NewMetrics creates the watcher's metrics and registers them with reg when
// it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_events_total", Help: "EndpointSlice informer events, by kind.",
		}, []string{"kind"}),
		UnlabelledSlices: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_unlabelled_total", Help: "EndpointSlice events ignored for lacking the kubernetes.io/service-name label.",
		}),
		WatchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_watch_errors_total", Help: "Failed EndpointSlice lists or watches (retried with backoff).",
		}),
		TranslateDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_translation_duration_seconds", Help: "Time to translate one Service's EndpointSlices.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_translate_skipped_total", Help: "Slices, ports and endpoints left out of CLAs, by reason.",
		}, []string{"reason"}),
		CLAChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_cla_changes_total", Help: "CLAs set to a new version or deleted in the store.",
		}),
		ApplyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_store_apply_errors_total", Help: "CLAs the store could not serialize.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Events, m.UnlabelledSlices, m.WatchErrors, m.TranslateDuration, m.Skipped, m.CLAChanges, m.ApplyErrors)
	}
	return m
}

func (m *Metrics) countSkipped(c translate.Counts) {
	add := func(reason string, n int) {
		if n > 0 {
			m.Skipped.WithLabelValues(reason).Add(float64(n))
		}
	}
	add("invalid_slice", c.InvalidSlices)
	add("foreign_slice", c.ForeignSlices)
	add("fqdn_slice", c.FQDNSlices)
	add("unnumbered_port", c.UnnumberedPorts)
	add("sctp_port", c.SCTPPorts)
	add("invalid_port", c.InvalidPorts)
	add("invalid_endpoint", c.InvalidEndpoints)
	add("unready_endpoint", c.UnreadyEndpoints)
	add("duplicate_endpoint", c.DuplicateEndpoints)
}
