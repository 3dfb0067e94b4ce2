package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/xds"
)

// Store is what admin reads from the xds.Store.
type Store interface {
	List(typeURL string) []*xds.Resource
	Len(typeURL string) int
	SubscriptionCount(typeURL string) (subs, names int)
	// MissingCount is the number of names subscribed to by name that have
	// no resource.
	MissingCount(typeURL string) int
	// Variants lists the per-view variants held for a name (none for a
	// resource without them); VariantStats counts those held for a type
	// and those built since the start.
	Variants(typeURL, name string) []xds.VariantInfo
	VariantStats(typeURL string) (held int, builds uint64)
	Synced() bool
}

// Streams is what admin reads from the delta.Server.
type Streams interface {
	Streams() []delta.StreamInfo
	// Missing lists the names subscribed to by name that have no
	// resource, with the node ids of the streams asking for them.
	Missing(typeURL string) []delta.MissingName
}

// Watcher is what admin reads from the watch.Watcher.
type Watcher interface {
	// Synced reports whether the first list has been translated.
	Synced() bool
	// LastEvent is when the API server last sent an event (or the first
	// list ended); zero if never.
	LastEvent() time.Time
	// APIServerHealth is when the API server last answered, and the error
	// of the latest attempt (nil if it answered).
	APIServerHealth() (lastOK time.Time, err error)
}

// Registry is where metrics are registered and gathered from; a
// *prometheus.Registry is one.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// Config configures a Server.
type Config struct {
	Store   Store
	Streams Streams
	Watcher Watcher
	// Registry serves /metrics. New registers the Go and process collectors,
	// the build info (from github.com/prometheus/common/version) and admin's
	// own gauges in it. Required.
	Registry Registry
	// Types are the type URLs reported; empty means xds.EndpointType.
	Types  []string
	Logger *zap.Logger
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// Server is the admin HTTP server.
type Server struct {
	cfg     Config
	log     *zap.Logger
	now     func() time.Time
	started time.Time
	handler http.Handler
	http    *http.Server
}

// New checks cfg, registers the metrics and builds the handlers. Nothing
// listens until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Streams == nil || cfg.Watcher == nil || cfg.Registry == nil {
		return nil, errors.New("admin: a store, streams, watcher and registry are required")
	}
	if len(cfg.Types) == 0 {
		cfg.Types = []string{xds.EndpointType}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	s.started = s.now()

	if err := s.registerMetrics(cfg.Registry); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(cfg.Registry,
		promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
			ErrorLog:          zap.NewStdLog(s.log.With(zap.String("handler", "metrics"))),
			Registry:          cfg.Registry,
			EnableOpenMetrics: true,
		})))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/resources", s.resources)
	mux.HandleFunc("GET /debug/streams", s.streams)
	mux.HandleFunc("GET /debug/missing", s.missing)
	mux.HandleFunc("GET /{$}", s.index)
	s.handler = mux
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(s.log.With(zap.String("server", "admin"))),
	}
	return s, nil
}

// Handler returns the server's routes, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on l until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve %s: %w", l.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for the requests in
// flight, or for ctx; then it closes what is left (a running CPU profile,
// say).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "deltaeds admin\n\n"+
		"/healthz          alive\n"+
		"/readyz           ready once EndpointSlices are synced; stays ready during API-server outages\n"+
		"/metrics          Prometheus metrics\n"+
		"/debug/resources  every CLA with version, endpoint counts and per-view variants (?name=NAME for the whole CLA)\n"+
		"/debug/streams    every Delta xDS stream, with its view (zone, node)\n"+
		"/debug/missing    names subscribed to that do not exist, with the nodes asking for them\n"+
		"/debug/pprof/     Go profiler\n")
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// age formats how long ago t was, or "never".
func (s *Server) age(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s ago (%s)", s.now().Sub(t).Round(time.Millisecond), t.UTC().Format(time.RFC3339))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	lastOK, apiErr := s.cfg.Watcher.APIServerHealth()
	lastEvent := s.cfg.Watcher.LastEvent()
	var b strings.Builder
	ready := s.cfg.Watcher.Synced() && s.cfg.Store.Synced()
	if ready {
		fmt.Fprintf(&b, "ready: EndpointSlices synced; serving %d CLAs\n", s.cfg.Store.Len(xds.EndpointType))
	} else {
		fmt.Fprintf(&b, "not ready: waiting for the first EndpointSlice list (started %s)\n", s.age(s.started))
	}
	fmt.Fprintf(&b, "last API-server event: %s\n", s.age(lastEvent))
	if apiErr != nil {
		fmt.Fprintf(&b, "API server: unreachable (%v); last answered: %s\n", oneLine(apiErr), s.age(lastOK))
		if ready {
			b.WriteString("still ready: the last known endpoints are served until the API server is back\n")
		}
	} else {
		fmt.Fprintf(&b, "API server: reachable; last answered: %s\n", s.age(lastOK))
	}
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(b.String()))
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// ResourcesResponse is the body of /debug/resources.
type ResourcesResponse struct {
	TypeURL   string         `json:"type_url"`
	Synced    bool           `json:"synced"`
	Count     int            `json:"count"`
	Resources []ResourceInfo `json:"resources"`
}

// ResourceInfo describes one stored CLA.
type ResourceInfo struct {
	Name       string    `json:"name"`
	Version    string    `json:"version"`
	Bytes      int       `json:"bytes"`
	ObservedAt time.Time `json:"observed_at,omitzero"`
	// Endpoints is the total over all priorities.
	Endpoints  int            `json:"endpoints"`
	Priorities []PriorityInfo `json:"priorities"`
	// Error is set when the stored bytes do not decode as a CLA.
	Error string `json:"error,omitempty"`
	// CLA is the whole resource, only with ?name=.
	CLA json.RawMessage `json:"cla,omitempty"`
	// Variants are the per-view variants held for the CLA (topology-aware
	// endpoints): only those some connected client's view receives.
	Variants []VariantInfo `json:"variants,omitempty"`
}

// VariantInfo describes one per-view variant of a CLA: what clients at the
// views whose key it is receive instead of the plain CLA.
type VariantInfo struct {
	Key string `json:"key"`
	// Views is the number of distinct views (zone, node) served it;
	// SampleViews lists some of them.
	Views       int        `json:"views"`
	SampleViews []xds.View `json:"sample_views"`
	// Subscriptions is the number of subscriptions served it.
	Subscriptions int `json:"subscriptions"`
	ResourceInfo
}

// PriorityInfo counts the endpoints of one priority of a CLA.
type PriorityInfo struct {
	Priority   uint32 `json:"priority"`
	Localities int    `json:"localities"`
	Endpoints  int    `json:"endpoints"`
	// Health counts endpoints by their health_status (HEALTHY, UNHEALTHY,
	// DRAINING, ...; UNKNOWN when unset).
	Health map[string]int `json:"health"`
}

func (s *Server) resources(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	list := s.cfg.Store.List(xds.EndpointType)
	resp := ResourcesResponse{TypeURL: xds.EndpointType, Synced: s.cfg.Store.Synced(), Resources: make([]ResourceInfo, 0, len(list))}
	for _, res := range list {
		if name != "" && res.Name != name {
			continue
		}
		info := describe(res, name != "")
		for _, v := range s.cfg.Store.Variants(xds.EndpointType, res.Name) {
			info.Variants = append(info.Variants, VariantInfo{Key: v.Key, Views: v.Views, SampleViews: v.ViewList,
				Subscriptions: v.Subscriptions, ResourceInfo: describe(v.Resource, name != "")})
		}
		resp.Resources = append(resp.Resources, info)
	}
	resp.Count = len(resp.Resources)
	if name != "" && resp.Count == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no CLA named %q", name)})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func describe(res *xds.Resource, full bool) ResourceInfo {
	info := ResourceInfo{Name: res.Name, Version: res.Version, Bytes: res.WireSize, ObservedAt: res.ObservedAt, Priorities: []PriorityInfo{}}
	cla := &endpointv3.ClusterLoadAssignment{}
	if res.Wire == nil || res.Wire.GetResource() == nil {
		info.Error = "no resource bytes stored"
		return info
	}
	if err := res.Wire.GetResource().UnmarshalTo(cla); err != nil {
		info.Error = fmt.Sprintf("decode ClusterLoadAssignment: %v", err)
		return info
	}
	byPriority := map[uint32]*PriorityInfo{}
	var order []uint32
	for _, group := range cla.GetEndpoints() {
		p := byPriority[group.GetPriority()]
		if p == nil {
			p = &PriorityInfo{Priority: group.GetPriority(), Health: map[string]int{}}
			byPriority[group.GetPriority()] = p
			order = append(order, group.GetPriority())
		}
		p.Localities++
		for _, ep := range group.GetLbEndpoints() {
			p.Endpoints++
			p.Health[ep.GetHealthStatus().String()]++
			info.Endpoints++
		}
	}
	slices.Sort(order)
	for _, prio := range order {
		info.Priorities = append(info.Priorities, *byPriority[prio])
	}
	if full {
		js, err := protojson.Marshal(cla)
		if err != nil {
			info.Error = fmt.Sprintf("encode ClusterLoadAssignment: %v", err)
		} else {
			info.CLA = js
		}
	}
	return info
}

// StreamsResponse is the body of /debug/streams.
type StreamsResponse struct {
	Count   int                `json:"count"`
	Streams []delta.StreamInfo `json:"streams"`
}

func (s *Server) streams(w http.ResponseWriter, _ *http.Request) {
	list := s.cfg.Streams.Streams()
	if list == nil {
		list = []delta.StreamInfo{}
	}
	writeJSON(w, http.StatusOK, StreamsResponse{Count: len(list), Streams: list})
}

// MissingResponse is the body of /debug/missing.
type MissingResponse struct {
	TypeURL string `json:"type_url"`
	// Count is the number of missing names, as deltaeds_subscriptions_missing.
	Count   int                 `json:"count"`
	Missing []delta.MissingName `json:"missing"`
}

// missing lists the names streams subscribe to by name that have no
// resource (each served an empty CLA: a typo, or a deleted Service), with
// the node ids of the streams asking for each.
func (s *Server) missing(w http.ResponseWriter, _ *http.Request) {
	list := s.cfg.Streams.Missing(xds.EndpointType)
	if list == nil {
		list = []delta.MissingName{}
	}
	writeJSON(w, http.StatusOK, MissingResponse{TypeURL: xds.EndpointType, Count: len(list), Missing: list})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}
