package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/admin"
	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeWatcher struct {
	mu        sync.Mutex
	synced    bool
	lastEvent time.Time
	lastOK    time.Time
	err       error
}

func (f *fakeWatcher) Synced() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.synced }
func (f *fakeWatcher) LastEvent() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastEvent
}
func (f *fakeWatcher) APIServerHealth() (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastOK, f.err
}

type fakeStreams []delta.StreamInfo

func (f fakeStreams) Streams() []delta.StreamInfo        { return f }
func (f fakeStreams) Missing(string) []delta.MissingName { return nil }

// fakeMissing lists missing names by type URL.
type fakeMissing struct {
	fakeStreams
	byType map[string][]delta.MissingName
}

func (f fakeMissing) Missing(typeURL string) []delta.MissingName { return f.byType[typeURL] }

func endpoint(ip string, health corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HealthStatus: health,
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
			}}},
		}},
	}
}

type env struct {
	store   *xds.Store
	watcher *fakeWatcher
	reg     *prometheus.Registry
	url     string
}

// start serves admin on a loopback port until the test ends.
func start(t *testing.T, streams fakeStreams) *env {
	t.Helper()
	return startWith(t, streams)
}

func startWith(t *testing.T, streams admin.Streams) *env {
	t.Helper()
	e := &env{store: xds.NewStore(), watcher: &fakeWatcher{}, reg: prometheus.NewRegistry()}
	e.store.RegisterType(xds.EndpointType, nil)
	srv, err := admin.New(admin.Config{
		Store: e.store, Streams: streams, Watcher: e.watcher, Registry: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	e.url = "http://" + l.Addr().String()
	return e
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestHealthAndReadiness(t *testing.T) {
	e := start(t, nil)
	if code, body, _ := get(t, e.url+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	code, body, _ := get(t, e.url+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") || !strings.Contains(body, "last API-server event: never") {
		t.Errorf("/readyz before sync = %d %q", code, body)
	}

	now := time.Now()
	e.watcher.mu.Lock()
	e.watcher.synced, e.watcher.lastEvent, e.watcher.lastOK = true, now.Add(-3*time.Second), now
	e.watcher.mu.Unlock()
	// The watcher marks the store synced before it reports Synced.
	e.store.MarkSynced()
	code, body, _ = get(t, e.url+"/readyz")
	if code != 200 || !strings.HasPrefix(body, "ready: EndpointSlices synced") || !strings.Contains(body, "API server: reachable") {
		t.Errorf("/readyz after sync = %d %q", code, body)
	}

	// An API-server outage keeps the replica ready, and says so.
	e.watcher.mu.Lock()
	e.watcher.err = errors.New("dial tcp 127.0.0.1:6443:\n connection refused")
	e.watcher.mu.Unlock()
	code, body, _ = get(t, e.url+"/readyz")
	if code != 200 || !strings.Contains(body, "API server: unreachable (dial tcp 127.0.0.1:6443: connection refused)") ||
		!strings.Contains(body, "still ready: the last known endpoints are served") {
		t.Errorf("/readyz during outage = %d %q", code, body)
	}
}

func TestDebugResources(t *testing.T) {
	e := start(t, nil)
	observed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cla := &endpointv3.ClusterLoadAssignment{
		ClusterName: "shop/cart/http",
		Endpoints: []*endpointv3.LocalityLbEndpoints{
			{Priority: 0, Locality: &corev3.Locality{Zone: "a"}, LbEndpoints: []*endpointv3.LbEndpoint{
				endpoint("10.0.0.1", corev3.HealthStatus_HEALTHY), endpoint("10.0.0.2", corev3.HealthStatus_UNHEALTHY)}},
			{Priority: 0, Locality: &corev3.Locality{Zone: "b"}, LbEndpoints: []*endpointv3.LbEndpoint{
				endpoint("10.0.1.1", corev3.HealthStatus_HEALTHY)}},
			{Priority: 1, Locality: &corev3.Locality{Zone: "a"}, LbEndpoints: []*endpointv3.LbEndpoint{
				endpoint("10.0.0.3", corev3.HealthStatus_HEALTHY)}},
		},
	}
	if _, err := e.store.Apply(xds.EndpointType, []xds.ResourceUpdate{
		{Name: "shop/cart/http", Message: cla, ObservedAt: observed},
		{Name: "shop/empty", Message: &endpointv3.ClusterLoadAssignment{ClusterName: "shop/empty"}},
	}); err != nil {
		t.Fatal(err)
	}
	e.store.MarkSynced()

	code, body, hdr := get(t, e.url+"/debug/resources")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/debug/resources = %d %s %q", code, hdr.Get("Content-Type"), body)
	}
	var resp admin.ResourcesResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.TypeURL != xds.EndpointType || !resp.Synced || resp.Count != 2 || len(resp.Resources) != 2 {
		t.Fatalf("response = %+v", resp)
	}
	cart := resp.Resources[0]
	want := e.store.Get(xds.EndpointType, "shop/cart/http")
	if cart.Name != "shop/cart/http" || cart.Version != want.Version || cart.Bytes != want.WireSize ||
		!cart.ObservedAt.Equal(observed) || cart.Endpoints != 4 || cart.Error != "" || cart.CLA != nil {
		t.Errorf("cart = %+v", cart)
	}
	if len(cart.Priorities) != 2 ||
		cart.Priorities[0].Priority != 0 || cart.Priorities[0].Localities != 2 || cart.Priorities[0].Endpoints != 3 ||
		cart.Priorities[0].Health["HEALTHY"] != 2 || cart.Priorities[0].Health["UNHEALTHY"] != 1 ||
		cart.Priorities[1].Priority != 1 || cart.Priorities[1].Endpoints != 1 {
		t.Errorf("cart priorities = %+v", cart.Priorities)
	}
	if empty := resp.Resources[1]; empty.Name != "shop/empty" || empty.Endpoints != 0 || empty.Priorities == nil {
		t.Errorf("empty = %+v", empty)
	}

	code, body, _ = get(t, e.url+"/debug/resources?name=shop/cart/http")
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || resp.Count != 1 {
		t.Fatalf("?name= : %d %v %q", code, err, body)
	}
	var full struct {
		ClusterName string            `json:"clusterName"`
		Endpoints   []json.RawMessage `json:"endpoints"`
	}
	if err := json.Unmarshal(resp.Resources[0].CLA, &full); err != nil || full.ClusterName != "shop/cart/http" || len(full.Endpoints) != 3 {
		t.Errorf("full CLA = %s (%v)", resp.Resources[0].CLA, err)
	}
	if code, _, _ := get(t, e.url+"/debug/resources?name=nope"); code != http.StatusNotFound {
		t.Errorf("unknown name: %d", code)
	}
	if cart.Variants != nil {
		t.Errorf("a CLA without variants lists %+v", cart.Variants)
	}

	// Variants: clients in zone a get the zone a endpoints only.
	for _, v := range []xds.View{{Zone: "a", Node: "n1"}, {Zone: "a", Node: "n2"}, {Zone: "c"}} {
		sub := e.store.SubscribeView(xds.EndpointType, v, make(chan struct{}, 1), 0)
		defer sub.Close()
		if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"shop/cart/http"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Apply(xds.EndpointType, []xds.ResourceUpdate{
		{Name: "shop/cart/http", Message: cla, ObservedAt: observed, Variants: zoneVariant{cla}},
	}); err != nil {
		t.Fatal(err)
	}
	code, body, _ = get(t, e.url+"/debug/resources?name=shop/cart/http")
	resp = admin.ResourcesResponse{}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || resp.Count != 1 {
		t.Fatalf("?name= with variants: %d %v %q", code, err, body)
	}
	vs := resp.Resources[0].Variants
	if len(vs) != 1 {
		t.Fatalf("variants = %+v", vs)
	}
	held := e.store.Variants(xds.EndpointType, "shop/cart/http")[0].Resource
	if v := vs[0]; v.Key != "zone:a" || v.Views != 2 || v.Subscriptions != 2 ||
		!reflect.DeepEqual(v.SampleViews, []xds.View{{Zone: "a", Node: "n1"}, {Zone: "a", Node: "n2"}}) ||
		v.Version != held.Version || v.Bytes != held.WireSize || v.Endpoints != 3 || len(v.Priorities) != 2 || v.CLA == nil {
		t.Errorf("variant = %+v", v)
	}
	for _, key := range []string{`"key": "zone:a"`, `"sample_views": [`, `"zone": "a"`, `"node": "n1"`} {
		if !strings.Contains(body, key) {
			t.Errorf("/debug/resources lacks %s: %s", key, body)
		}
	}
}

// zoneVariant is a Variants: a client in zone "z1" or "a" gets the CLA's
// localities of its zone only.
type zoneVariant struct {
	cla *endpointv3.ClusterLoadAssignment
}

func (zoneVariant) Key(v xds.View) string {
	if v.Zone == "a" || v.Zone == "z1" {
		return "zone:" + v.Zone
	}
	return ""
}

func (z zoneVariant) Build(v xds.View) proto.Message {
	if z.cla == nil {
		return &endpointv3.ClusterLoadAssignment{ClusterName: "variant"}
	}
	out := &endpointv3.ClusterLoadAssignment{ClusterName: z.cla.ClusterName}
	for _, l := range z.cla.Endpoints {
		if l.Locality.GetZone() == v.Zone {
			out.Endpoints = append(out.Endpoints, l)
		}
	}
	return out
}

func TestDebugStreams(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := start(t, fakeStreams{{NodeID: "envoy-1", Peer: "10.0.0.9:5555", ConnectedAt: at, Subscriptions: 3, Pending: 1,
		Responses: 7, LastACK: at, LastNACK: at, LastNACKError: "bad", View: xds.View{Zone: "z1", Node: "n1"}}})
	code, body, _ := get(t, e.url+"/debug/streams")
	var resp struct {
		Count   int              `json:"count"`
		Streams []map[string]any `json:"streams"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 {
		t.Fatalf("/debug/streams = %d %v %q", code, err, body)
	}
	if resp.Count != 1 || resp.Streams[0]["node_id"] != "envoy-1" || resp.Streams[0]["peer"] != "10.0.0.9:5555" ||
		resp.Streams[0]["subscriptions"] != 3.0 || resp.Streams[0]["pending"] != 1.0 ||
		resp.Streams[0]["last_nack_error"] != "bad" || resp.Streams[0]["last_ack"] == nil ||
		!reflect.DeepEqual(resp.Streams[0]["view"], map[string]any{"zone": "z1", "node": "n1"}) {
		t.Errorf("streams = %+v", resp)
	}

	e = start(t, nil)
	if _, body, _ := get(t, e.url+"/debug/streams"); !strings.Contains(body, `"streams": []`) {
		t.Errorf("no streams: %q", body)
	}
}

func TestDebugMissing(t *testing.T) {
	e := startWith(t, fakeMissing{byType: map[string][]delta.MissingName{
		xds.EndpointType: {
			{Name: "shop/web/https", NodeIDs: []string{"envoy-a", "envoy-b"}},
			{Name: "x/y", NodeIDs: []string{}},
		},
		"type.googleapis.com/other": {{Name: "not/this"}},
	}})
	code, body, hdr := get(t, e.url+"/debug/missing")
	var resp admin.MissingResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/debug/missing = %d %q %v %q", code, hdr.Get("Content-Type"), err, body)
	}
	want := admin.MissingResponse{TypeURL: xds.EndpointType, Count: 2, Missing: []delta.MissingName{
		{Name: "shop/web/https", NodeIDs: []string{"envoy-a", "envoy-b"}},
		{Name: "x/y", NodeIDs: []string{}},
	}}
	if !reflect.DeepEqual(resp, want) {
		t.Errorf("/debug/missing = %+v, want %+v", resp, want)
	}
	for _, key := range []string{`"name": "shop/web/https"`, `"node_ids": [`, `"count": 2`} {
		if !strings.Contains(body, key) {
			t.Errorf("/debug/missing lacks %s: %s", key, body)
		}
	}

	e = start(t, nil)
	if _, body, _ := get(t, e.url+"/debug/missing"); !strings.Contains(body, `"missing": []`) || !strings.Contains(body, `"count": 0`) {
		t.Errorf("nothing missing: %q", body)
	}
}

// TestDebugMissingFromServer: /debug/missing and the gauge read from a real
// store and xDS server follow subscriptions and resources.
func TestDebugMissingFromServer(t *testing.T) {
	store := xds.NewStore()
	store.RegisterType(xds.EndpointType, func(name string) proto.Message { return &endpointv3.ClusterLoadAssignment{ClusterName: name} })
	store.MarkSynced()
	reg := prometheus.NewRegistry()
	srv, err := admin.New(admin.Config{Store: store, Streams: delta.NewServer(store, delta.Config{}), Watcher: &fakeWatcher{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	sub := store.Subscribe(xds.EndpointType, make(chan struct{}, 1), 0)
	defer sub.Close()
	if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"a/b", "c/d", "*"}}); err != nil {
		t.Fatal(err)
	}
	check := func(want ...string) {
		t.Helper()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/missing", nil))
		var resp admin.MissingResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range resp.Missing {
			got = append(got, m.Name)
		}
		if !slices.Equal(got, want) || resp.Count != len(want) {
			t.Errorf("/debug/missing = %s, want %q", rec.Body, want)
		}
		if n := gaugeValue(t, reg, "deltaeds_subscriptions_missing"); n != float64(len(want)) {
			t.Errorf("deltaeds_subscriptions_missing = %v, want %d", n, len(want))
		}
	}
	check("a/b", "c/d")
	if _, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "a/b", Message: &endpointv3.ClusterLoadAssignment{ClusterName: "a/b"}}}); err != nil {
		t.Fatal(err)
	}
	check("c/d")
	if _, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "a/b"}}); err != nil {
		t.Fatal(err)
	}
	check("a/b", "c/d")
	if err := sub.Update(xds.SubscriptionChange{Unsubscribe: []string{"c/d"}}); err != nil {
		t.Fatal(err)
	}
	check("a/b")
	sub.Close()
	check()
}

// gaugeValue returns the value of the one series of a gauge gathered from
// reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

func TestMetrics(t *testing.T) {
	// What `make build` sets with -ldflags.
	oldVersion, oldRevision := version.Version, version.Revision
	version.Version, version.Revision = "v1.2.3", "abc"
	t.Cleanup(func() { version.Version, version.Revision = oldVersion, oldRevision })
	e := start(t, nil)
	delta.NewMetrics(e.reg)
	sub := e.store.Subscribe(xds.EndpointType, make(chan struct{}, 1), 0)
	defer sub.Close()
	if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"a/b", "c/d"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "a/b", Message: &endpointv3.ClusterLoadAssignment{ClusterName: "a/b"}}}); err != nil {
		t.Fatal(err)
	}
	// Two views of one zone share its variant of e/f: one held, one built.
	for _, node := range []string{"n1", "n2"} {
		sub := e.store.SubscribeView(xds.EndpointType, xds.View{Zone: "z1", Node: node}, make(chan struct{}, 1), 0)
		defer sub.Close()
		if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"e/f"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "e/f", Message: &endpointv3.ClusterLoadAssignment{ClusterName: "e/f"},
		Variants: zoneVariant{}}}); err != nil {
		t.Fatal(err)
	}
	e.watcher.mu.Lock()
	e.watcher.lastEvent = time.Now().Add(-time.Minute)
	e.watcher.lastOK = time.Now()
	e.watcher.mu.Unlock()

	code, body, _ := get(t, e.url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	typeLabel := `{type_url="` + xds.EndpointType + `"}`
	for _, want := range []string{
		"deltaeds_subscriptions" + typeLabel + " 3",
		"deltaeds_subscribed_names" + typeLabel + " 4",
		"deltaeds_subscriptions_missing" + typeLabel + " 1",
		"deltaeds_store_resources" + typeLabel + " 2",
		"deltaeds_store_variants" + typeLabel + " 1",
		"deltaeds_store_variant_builds_total" + typeLabel + " 1",
		"deltaeds_store_synced 0",
		"deltaeds_apiserver_up 1",
		"deltaeds_apiserver_last_event_age_seconds 60.",
		"deltaeds_apiserver_last_contact_age_seconds 0.",
		`deltaeds_build_info{branch="",commit="abc",go_version="` + runtime.Version() + `",`,
		`,revision="abc",`,
		`,version="v1.2.3"} 1`,
		"deltaeds_xds_streams 0",
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestPprofAndIndex(t *testing.T) {
	e := start(t, nil)
	if code, body, _ := get(t, e.url+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d", code)
	}
	if code, body, _ := get(t, e.url+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine = %d", code)
	}
	if code, body, _ := get(t, e.url+"/"); code != 200 || !strings.Contains(body, "/debug/resources") {
		t.Errorf("/ = %d %q", code, body)
	}
	if code, _, _ := get(t, e.url+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d", code)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := admin.New(admin.Config{}); err == nil {
		t.Error("empty config accepted")
	}
	reg := prometheus.NewRegistry()
	cfg := admin.Config{Store: xds.NewStore(), Streams: fakeStreams{}, Watcher: &fakeWatcher{}, Registry: reg}
	if _, err := admin.New(cfg); err != nil {
		t.Fatal(err)
	}
	// A second server on the same registry would export duplicates.
	if _, err := admin.New(cfg); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Errorf("second registration: %v", err)
	}
}
