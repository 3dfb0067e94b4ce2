package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics admin adds, read from their sources at scrape time. The xDS
// server's and the watcher's own counters are registered by delta and watch.
var (
	subscriptionsDesc = prometheus.NewDesc("deltaeds_subscriptions",
		"Open Delta xDS subscriptions (one per stream and type).", []string{"type_url"}, nil)
	subscribedNamesDesc = prometheus.NewDesc("deltaeds_subscribed_names",
		"Resource names held by open subscriptions (a wildcard counts as one).", []string{"type_url"}, nil)
	subscriptionsMissingDesc = prometheus.NewDesc("deltaeds_subscriptions_missing",
		"Names subscribed to by name that have no resource (served empty: a typo, or a deleted Service); /debug/missing lists them.", []string{"type_url"}, nil)
	storeResourcesDesc = prometheus.NewDesc("deltaeds_store_resources",
		"Resources in the store.", []string{"type_url"}, nil)
	storeSyncedDesc = prometheus.NewDesc("deltaeds_store_synced",
		"1 once the first EndpointSlice list has been translated and the store answers subscriptions.", nil, nil)
	lastEventAgeDesc = prometheus.NewDesc("deltaeds_apiserver_last_event_age_seconds",
		"Seconds since the last EndpointSlice event or list from the API server (since start if none yet). "+
			"Grows in a quiet cluster too: read it with deltaeds_apiserver_up.", nil, nil)
	lastContactAgeDesc = prometheus.NewDesc("deltaeds_apiserver_last_contact_age_seconds",
		"Seconds since the API server last answered a health probe (since start if never).", nil, nil)
	apiserverUpDesc = prometheus.NewDesc("deltaeds_apiserver_up",
		"1 when the latest API-server health probe succeeded, 0 while it is unreachable "+
			"(the last known endpoints keep being served).", nil, nil)
	buildInfoDesc = prometheus.NewDesc("deltaeds_build_info",
		"Always 1; labels describe the binary.", []string{"version", "commit", "go_version"}, nil)
)

type collector struct{ s *Server }

func newCollector(s *Server) prometheus.Collector { return collector{s} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{subscriptionsDesc, subscribedNamesDesc, subscriptionsMissingDesc, storeResourcesDesc,
		storeSyncedDesc, lastEventAgeDesc, lastContactAgeDesc, apiserverUpDesc, buildInfoDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	for _, typeURL := range s.cfg.Types {
		subs, names := s.cfg.Store.SubscriptionCount(typeURL)
		ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(subs), typeURL)
		ch <- prometheus.MustNewConstMetric(subscribedNamesDesc, prometheus.GaugeValue, float64(names), typeURL)
		ch <- prometheus.MustNewConstMetric(subscriptionsMissingDesc, prometheus.GaugeValue, float64(s.cfg.Store.MissingCount(typeURL)), typeURL)
		ch <- prometheus.MustNewConstMetric(storeResourcesDesc, prometheus.GaugeValue, float64(s.cfg.Store.Len(typeURL)), typeURL)
	}
	ch <- prometheus.MustNewConstMetric(storeSyncedDesc, prometheus.GaugeValue, boolFloat(s.cfg.Store.Synced()))

	now := s.now()
	age := func(t time.Time) float64 {
		if t.IsZero() {
			t = s.started
		}
		return now.Sub(t).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(lastEventAgeDesc, prometheus.GaugeValue, age(s.cfg.Watcher.LastEvent()))
	lastOK, err := s.cfg.Watcher.APIServerHealth()
	ch <- prometheus.MustNewConstMetric(lastContactAgeDesc, prometheus.GaugeValue, age(lastOK))
	ch <- prometheus.MustNewConstMetric(apiserverUpDesc, prometheus.GaugeValue, boolFloat(err == nil && !lastOK.IsZero()))

	bi := s.cfg.BuildInfo
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, bi.Version, bi.Commit, bi.GoVersion)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
