package envoysim

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// These tests pin the rules envoysim takes from Envoy's source; each names
// the Envoy file and function it follows (see doc.go, "What Envoy does").

// routeVersions maps routed names to versions.
func routeVersions(m map[string]Route) map[string]string {
	out := make(map[string]string, len(m))
	for n, r := range m {
		out[n] = r.Version
	}
	return out
}

// hosts counts the endpoints a route sends traffic to.
func hosts(r Route) int {
	n := 0
	for _, g := range r.CLA.GetEndpoints() {
		n += len(g.GetLbEndpoints())
	}
	return n
}

// eds.cc, EdsClusterImpl::onConfigUpdate: removals are ignored, a CLA with no
// endpoints empties the cluster, and removing the cluster drops it.
func TestRemovalKeepsRoutes(t *testing.T) {
	c, fs := connect(t, Config{}, "a", "b")
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "b", "v1")))

	if got := fs.exchange(t, resp("n2", []string{"a"})); !proto.Equal(got, ackOf("n2")) {
		t.Fatalf("got %v, want ACK of n2", got)
	}
	if _, ok := c.Held("a"); ok {
		t.Error("the xDS state still holds a after its removal")
	}
	if !c.Removed("a") {
		t.Error("Removed(a) = false after a removal")
	}
	r, ok := c.Route("a")
	if !ok || r.Version != "v1" || hosts(r) != 1 {
		t.Fatalf("Route(a) = %+v, %v; want the v1 hosts kept through the removal", r, ok)
	}

	// Only a CLA without endpoints empties what the cluster routes to.
	empty := &discoveryv3.Resource{Name: "a", Version: "empty", Resource: mustAny(t, cla("a"))}
	fs.exchange(t, resp("n3", nil, empty))
	if r, ok := c.Route("a"); !ok || hosts(r) != 0 {
		t.Fatalf("Route(a) = %+v, %v after an empty CLA; want no hosts", r, ok)
	}

	// A removed cluster routes nowhere at all.
	c.Unsubscribe("b")
	if _, ok := c.Route("b"); ok {
		t.Error("Route(b) still set after unsubscribing")
	}
	if got := routeVersions(c.Routes()); !maps.Equal(got, map[string]string{"a": "empty"}) {
		t.Errorf("Routes = %v", got)
	}
}

// watch_map.cc, WatchMap::onConfigUpdate and delta_subscription_state.cc,
// handleGoodResponse: delivery stops at the first cluster that throws, those
// delivered before it keep their CLA, and no version of the response is
// recorded, so a reconnect declares the old versions.
func TestPartialNACK(t *testing.T) {
	tests := []struct {
		name       string
		reject     string            // the resource the client fails on
		wantRoutes map[string]string // after the NACK
	}{
		{"first fails: nothing applied", "a", map[string]string{"a": "v1", "b": "v1", "c": "v1"}},
		{"middle fails: the one before applied", "b", map[string]string{"a": "v2", "b": "v1", "c": "v1"}},
		{"last fails: all others applied", "c", map[string]string{"a": "v2", "b": "v2", "c": "v1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			var asked []string
			c := startClient(t, f, Config{Reject: func(name string, m proto.Message) error {
				asked = append(asked, name)
				if _, ok := m.(interface{ GetClusterName() string }); !ok {
					t.Errorf("Reject got %T, want the decoded CLA", m)
				}
				if name == tt.reject && len(asked) > 3 {
					return errors.New("bad endpoint")
				}
				return nil
			}})
			c.Subscribe("a", "b", "c")
			fs := f.nextStream(t)
			fs.recv(t)
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "b", "v1"), res(t, "c", "v1")))

			got := fs.exchange(t, resp("n2", nil, res(t, "a", "v2"), res(t, "b", "v2"), res(t, "c", "v2")))
			if got.GetResponseNonce() != "n2" || got.GetErrorDetail() == nil {
				t.Fatalf("got %v, want a NACK of n2", got)
			}
			if want := tt.reject + ": bad endpoint"; got.GetErrorDetail().GetMessage() != want {
				t.Errorf("error_detail = %q, want %q", got.GetErrorDetail().GetMessage(), want)
			}
			if r := routeVersions(c.Routes()); !maps.Equal(r, tt.wantRoutes) {
				t.Errorf("Routes = %v, want %v", r, tt.wantRoutes)
			}
			if h := versions(c.HeldAll()); !maps.Equal(h, map[string]string{"a": "v1", "b": "v1", "c": "v1"}) {
				t.Errorf("held = %v, want every v1: a NACKed response records no version", h)
			}
			if i := slices.Index(asked[3:], tt.reject); i < 0 || len(asked[3:]) != i+1 {
				t.Errorf("Reject asked about %v; want it to stop at %s", asked[3:], tt.reject)
			}
			// The writer counts a request after Send returns, which may be after the server read it.
			waitFor(t, c, "the NACK counted", func(s State) bool { return s.Stats().NACKs == 1 })
			if st := c.Stats(); st.NACKs != 1 || len(st.Violations) != 0 {
				t.Errorf("Stats = %+v", st)
			}

			c.Disconnect()
			fs2 := f.nextStream(t)
			want := &discoveryv3.DeltaDiscoveryRequest{
				Node:                    &corev3.Node{Id: "node-1", Cluster: "cluster-1"},
				TypeUrl:                 TypeURLClusterLoadAssignment,
				ResourceNamesSubscribe:  []string{"a", "b", "c"},
				InitialResourceVersions: map[string]string{"a": "v1", "b": "v1", "c": "v1"},
			}
			if got := fs2.recv(t); !proto.Equal(got, want) {
				t.Fatalf("first request after reconnect:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// backoff_strategy.cc, JitteredExponentialBackOffStrategy::nextBackOffMs:
// uniformly random below an interval that doubles from the base to the
// maximum, and restarts from the base after reset.
func TestRetryBackoff(t *testing.T) {
	b := newRetryBackoff(500*time.Millisecond, 30*time.Second)
	bounds := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, bound := range bounds {
		if b.interval != bound {
			t.Fatalf("retry %d: interval %v, want %v", i, b.interval, bound)
		}
		if d := b.next(); d < 0 || d >= bound {
			t.Fatalf("retry %d: delay %v outside [0, %v)", i, d, bound)
		}
	}
	b.reset()
	if b.interval != 500*time.Millisecond {
		t.Fatalf("after reset: interval %v, want 500ms", b.interval)
	}
	// Jitter spreads delays over the whole interval, not around its end.
	low := 0
	for range 1000 {
		c := newRetryBackoff(time.Second, 30*time.Second)
		if c.next() < 500*time.Millisecond {
			low++
		}
	}
	if low < 300 || low > 700 {
		t.Errorf("%d of 1000 first delays under half the base; want about half", low)
	}
	if d := New(Config{}).cfg; d.Backoff != 500*time.Millisecond || d.MaxBackoff != 30*time.Second {
		t.Errorf("default backoff %v..%v, want Envoy's 500ms..30s", d.Backoff, d.MaxBackoff)
	}
}

// delta_subscription_state.cc: a request is legacy wildcard only when it
// names nothing to subscribe and nothing to unsubscribe, so the client sends
// no first request before it wants a name, and unsubscribing every name
// sends an unsubscribe, never an empty request.
func TestNeverLegacyWildcard(t *testing.T) {
	f := newFake(t)
	c := startClient(t, f, Config{Backoff: time.Millisecond})
	fs := f.nextStream(t)
	// Nothing goes out before the client wants a name: the stream's first
	// request is the subscription.
	c.Subscribe("a")
	if got := fs.recv(t); !slices.Equal(got.GetResourceNamesSubscribe(), []string{"a"}) {
		t.Fatalf("first request %v, want a subscribe of a", got)
	}
	c.Unsubscribe("a")
	got := fs.recv(t)
	if len(got.GetResourceNamesSubscribe()) != 0 || !slices.Equal(got.GetResourceNamesUnsubscribe(), []string{"a"}) {
		t.Fatalf("got %v, want an unsubscribe of a", got)
	}
	// A stream opened while nothing is wanted stays silent: its first
	// request is the next subscription.
	c.Disconnect()
	fs = f.nextStream(t)
	c.Subscribe("b")
	if got := fs.recv(t); !slices.Equal(got.GetResourceNamesSubscribe(), []string{"b"}) || len(got.GetResourceNamesUnsubscribe()) != 0 {
		t.Fatalf("first request on the new stream %v, want a subscribe of b", got)
	}
}
