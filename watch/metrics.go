package watch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"k8s.io/client-go/util/workqueue"

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
	// NodeRegionChanges counts Nodes whose region label changed (appeared,
	// relabelled, deleted) under Config.NodeLocality; each re-translates
	// the Services with an endpoint on the Node.
	NodeRegionChanges prometheus.Counter
	// ServicePolicyChanges counts Services whose internalTrafficPolicy
	// became or stopped being Local (created, edited, deleted) under
	// Config.InternalTrafficPolicy; each re-translates the Service.
	ServicePolicyChanges prometheus.Counter

	// The Service workqueue's own figures: a growing depth or queue duration
	// is the event backlog that delays endpoints during rolling restarts.
	QueueDepth          prometheus.Gauge
	QueueAdds           prometheus.Counter
	QueueDuration       prometheus.Histogram
	QueueWorkDuration   prometheus.Histogram
	QueueUnfinished     prometheus.Gauge
	QueueLongestRunning prometheus.Gauge
}

// NewMetrics creates the watcher's metrics and registers them with reg when
// it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg) // nil: unregistered
	m := &Metrics{
		Events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_events_total", Help: "EndpointSlice informer events, by kind.",
		}, []string{"kind"}),
		UnlabelledSlices: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_unlabelled_total", Help: "EndpointSlice events ignored for lacking the kubernetes.io/service-name label.",
		}),
		WatchErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_endpointslice_watch_errors_total", Help: "Failed EndpointSlice lists or watches (retried with backoff).",
		}),
		TranslateDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_translation_duration_seconds", Help: "Time to translate one Service's EndpointSlices.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
		Skipped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_translate_skipped_total", Help: "Slices, ports and endpoints left out of CLAs, by reason.",
		}, []string{"reason"}),
		CLAChanges: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_cla_changes_total", Help: "CLAs set to a new version or deleted in the store.",
		}),
		ApplyErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_store_apply_errors_total", Help: "CLAs the store could not serialize.",
		}),
		NodeRegionChanges: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_node_region_changes_total", Help: "Nodes whose topology.kubernetes.io/region changed (--node-locality); each re-translates the Services with an endpoint on it.",
		}),
		ServicePolicyChanges: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_service_policy_changes_total", Help: "Services whose internalTrafficPolicy became or stopped being Local (--internal-traffic-policy); each re-translates the Service.",
		}),
		QueueDepth: f.NewGauge(prometheus.GaugeOpts{
			Name: "deltaeds_workqueue_depth", Help: "Services waiting in the workqueue to be translated.",
		}),
		QueueAdds: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_workqueue_adds_total", Help: "Services added to the workqueue (a Service already waiting is not added twice).",
		}),
		QueueDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_workqueue_queue_duration_seconds", Help: "Time a Service waited in the workqueue before a worker took it.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12),
		}),
		QueueWorkDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_workqueue_work_duration_seconds", Help: "Time a worker spent on one Service (translate and store).",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12),
		}),
		QueueUnfinished: f.NewGauge(prometheus.GaugeOpts{
			Name: "deltaeds_workqueue_unfinished_work_seconds", Help: "Seconds of work in progress not yet finished, summed over the workers.",
		}),
		QueueLongestRunning: f.NewGauge(prometheus.GaugeOpts{
			Name: "deltaeds_workqueue_longest_running_processor_seconds", Help: "How long the longest-running worker has been on its Service.",
		}),
	}
	return m
}

// queueMetrics gives client-go's workqueue the watcher's queue metrics. The
// watcher has one queue, so the queue's name is not a label.
type queueMetrics struct{ m *Metrics }

var _ workqueue.MetricsProvider = queueMetrics{}

func (q queueMetrics) NewDepthMetric(string) workqueue.GaugeMetric       { return q.m.QueueDepth }
func (q queueMetrics) NewAddsMetric(string) workqueue.CounterMetric      { return q.m.QueueAdds }
func (q queueMetrics) NewLatencyMetric(string) workqueue.HistogramMetric { return q.m.QueueDuration }
func (q queueMetrics) NewWorkDurationMetric(string) workqueue.HistogramMetric {
	return q.m.QueueWorkDuration
}
func (q queueMetrics) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return q.m.QueueUnfinished
}
func (q queueMetrics) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return q.m.QueueLongestRunning
}

func (m *Metrics) countSkipped(c translate.SkipCounts) {
	add := func(reason string, n int) {
		if n > 0 {
			m.Skipped.WithLabelValues(reason).Add(float64(n))
		}
	}
	add("invalid_slice", c.InvalidSlices)
	add("foreign_slice", c.ForeignSlices)
	add("fqdn_slice", c.FQDNSlices)
	add("other_family_slice", c.OtherFamilySlices)
	add("unnumbered_port", c.UnnumberedPorts)
	add("incomplete_port", c.IncompletePorts)
	add("mixed_protocol_port", c.MixedProtocolPorts)
	add("sctp_port", c.SCTPPorts)
	add("invalid_port", c.InvalidPorts)
	add("invalid_endpoint", c.InvalidEndpoints)
	add("unready_endpoint", c.UnreadyEndpoints)
	add("duplicate_endpoint", c.DuplicateEndpoints)
}

// NewRetriesMetric is not exported: the watcher never requeues with backoff
// (a CLA the store cannot serialize is counted in store_apply_errors_total;
// it would fail again), and the delaying queue's AddAfter, which it would
// count, is only the deleted-grace recheck.
func (q queueMetrics) NewRetriesMetric(string) workqueue.CounterMetric { return noRetries{} }

type noRetries struct{}

func (noRetries) Inc() {}
