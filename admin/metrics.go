package admin

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/version"
)

// registerMetrics registers, in reg, the Go and process collectors, the build
// info and admin's own gauges, which read their sources at scrape time. The
// xDS server's and the watcher's own counters are registered by delta and
// watch.
func (s *Server) registerMetrics(reg prometheus.Registerer) error {
	// deltaeds_build_info: client_golang's version collector, whose labels
	// (version, revision, branch, goversion, goos, goarch, tags) come from
	// prometheus/common/version (set with -ldflags by `make build`), plus
	// commit and go_version, the labels it had before, for the queries that
	// use them.
	buildInfo := versioncollector.NewCollector("deltaeds", versioncollector.WithExtraConstLabels(prometheus.Labels{
		"commit":     version.GetRevision(),
		"go_version": version.GoVersion,
	}))
	// Registered first, and with Register rather than promauto, so that a
	// second server on the same registry is an error, not a panic.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("admin: register metrics: %w", err)
		}
	}

	f := promauto.With(reg)
	for _, typeURL := range s.cfg.Types {
		byType := prometheus.Labels{"type_url": typeURL}
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_subscriptions", ConstLabels: byType,
			Help: "Open Delta xDS subscriptions (one per stream and type)."},
			func() float64 { subs, _ := s.cfg.Store.SubscriptionCount(typeURL); return float64(subs) })
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_subscribed_names", ConstLabels: byType,
			Help: "Resource names held by open subscriptions (a wildcard counts as one)."},
			func() float64 { _, names := s.cfg.Store.SubscriptionCount(typeURL); return float64(names) })
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_subscriptions_missing", ConstLabels: byType,
			Help: "Names subscribed to by name that have no resource (served empty: a typo, or a deleted Service); /debug/missing lists them."},
			func() float64 { return float64(s.cfg.Store.MissingCount(typeURL)) })
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_store_resources", ConstLabels: byType,
			Help: "Resources in the store."},
			func() float64 { return float64(s.cfg.Store.Len(typeURL)) })
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_store_variants", ConstLabels: byType,
			Help: "Per-view variants held (topology-aware CLAs): one per resource and distinct key of the views subscribed to it."},
			func() float64 { held, _ := s.cfg.Store.VariantStats(typeURL); return float64(held) })
		f.NewCounterFunc(prometheus.CounterOpts{Name: "deltaeds_store_variant_builds_total", ConstLabels: byType,
			Help: "Per-view variants built and serialized: once per change and key, never per subscriber."},
			func() float64 { _, builds := s.cfg.Store.VariantStats(typeURL); return float64(builds) })
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_store_synced",
		Help: "1 once the first EndpointSlice list has been translated and the store answers subscriptions."},
		func() float64 { return boolFloat(s.cfg.Store.Synced()) })

	// age is how long ago t was, or since the start if never.
	age := func(t time.Time) float64 {
		if t.IsZero() {
			t = s.started
		}
		return s.now().Sub(t).Seconds()
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_apiserver_last_event_age_seconds",
		Help: "Seconds since the last EndpointSlice event or list from the API server (since start if none yet). " +
			"Grows in a quiet cluster too: read it with deltaeds_apiserver_up."},
		func() float64 { return age(s.cfg.Watcher.LastEvent()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_apiserver_last_contact_age_seconds",
		Help: "Seconds since the API server last answered a health probe (since start if never)."},
		func() float64 { lastOK, _ := s.cfg.Watcher.APIServerHealth(); return age(lastOK) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "deltaeds_apiserver_up",
		Help: "1 when the latest API-server health probe succeeded, 0 while it is unreachable " +
			"(the last known endpoints keep being served)."},
		func() float64 {
			lastOK, err := s.cfg.Watcher.APIServerHealth()
			return boolFloat(err == nil && !lastOK.IsZero())
		})
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
