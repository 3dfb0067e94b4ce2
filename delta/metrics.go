package delta

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the counters and histograms of the Delta xDS server. Every name
// carries the deltaeds_ prefix.
type Metrics struct {
	Streams          prometheus.Gauge
	Responses        *prometheus.CounterVec // by type_url
	ResourcesSent    *prometheus.CounterVec // by type_url
	RemovalsSent     *prometheus.CounterVec // by type_url
	BytesSent        *prometheus.CounterVec // by type_url
	ACKs             *prometheus.CounterVec // by type_url
	NACKs            *prometheus.CounterVec // by type_url
	StaleNonces      *prometheus.CounterVec // by type_url
	RejectedRequests *prometheus.CounterVec // by reason
	IgnoredTypes     *prometheus.CounterVec // by type_url
	ACKTimeouts      *prometheus.CounterVec // by type_url
	// NACKResends counts resources queued to be resent alone after a NACK
	// of a response that carried several (xds.Subscription.Rejected).
	NACKResends prometheus.Counter
	// EventToSend and EventToACK measure propagation: from when the change
	// behind a resource was observed upstream to its response being written,
	// and to the client's ACK of it (convergence). Only changes to what a
	// stream was subscribed to count (xds.Batch.Observed): a first answer's
	// content can be arbitrarily old.
	EventToSend prometheus.Histogram
	EventToACK  prometheus.Histogram
}

// propagationBuckets span 1 ms to about 2 minutes: field reports of lagging
// endpoints were in the tens of seconds.
var propagationBuckets = prometheus.ExponentialBuckets(0.001, 2, 18)

// NewMetrics creates the server's metrics and registers them with reg when
// reg is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	byType := []string{"type_url"}
	f := promauto.With(reg) // nil: unregistered
	m := &Metrics{
		Streams: f.NewGauge(prometheus.GaugeOpts{
			Name: "deltaeds_xds_streams", Help: "Connected Delta xDS streams.",
		}),
		Responses: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_responses_total", Help: "Delta xDS responses sent.",
		}, byType),
		ResourcesSent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_resources_sent_total", Help: "Resources sent in Delta xDS responses.",
		}, byType),
		RemovalsSent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_removals_sent_total", Help: "Names sent in removed_resources.",
		}, byType),
		BytesSent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_resource_bytes_sent_total", Help: "Serialized bytes of resources and removals sent.",
		}, byType),
		ACKs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_acks_total", Help: "Responses acknowledged by clients.",
		}, byType),
		NACKs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_nacks_total", Help: "Responses rejected by clients (NACK).",
		}, byType),
		StaleNonces: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_stale_nonces_total", Help: "Requests whose response_nonce was not the latest response's.",
		}, byType),
		RejectedRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_rejected_requests_total", Help: "Requests that ended their stream with an error, by reason.",
		}, []string{"reason"}),
		IgnoredTypes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_ignored_requests_total", Help: "Requests for type URLs deltaeds does not serve.",
		}, byType),
		ACKTimeouts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "deltaeds_xds_ack_timeouts_total", Help: "Streams ended because a response was neither ACKed nor NACKed within the ack timeout, by the type of that response.",
		}, byType),
		NACKResends: f.NewCounter(prometheus.CounterOpts{
			Name: "deltaeds_xds_nack_resends_total", Help: "Resources of NACKed multi-resource responses queued to be resent one per response, to isolate the rejected one.",
		}),
		EventToSend: f.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_propagation_send_seconds", Help: "From upstream event observed to response sent, per changed resource and stream (first answers to a subscription are not changes).",
			Buckets: propagationBuckets,
		}),
		EventToACK: f.NewHistogram(prometheus.HistogramOpts{
			Name: "deltaeds_propagation_ack_seconds", Help: "From upstream event observed to the client's ACK, per changed resource and stream (first answers to a subscription are not changes).",
			Buckets: propagationBuckets,
		}),
	}
	return m
}
