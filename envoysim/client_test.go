package envoysim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/util/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFirstRequestThenACK(t *testing.T) {
	loc := &corev3.Locality{Region: "r1", Zone: "z1"}
	f := newFake(t)
	c := startClient(t, f, Config{NodeID: "envoy-7", Cluster: "edge", Locality: loc})
	c.Subscribe("b", "a")
	fs := f.nextStream(t)

	want := &discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "envoy-7", Cluster: "edge", Locality: loc},
		TypeUrl:                TypeURLClusterLoadAssignment,
		ResourceNamesSubscribe: []string{"a", "b"},
	}
	if got := fs.recv(t); !proto.Equal(got, want) {
		t.Fatalf("first request:\n got %v\nwant %v", got, want)
	}

	r := resp("n1", nil, res(t, "a", "v1"), res(t, "b", "v1"))
	if got := fs.exchange(t, r); !proto.Equal(got, ackOf("n1")) {
		t.Fatalf("ACK:\n got %v\nwant %v", got, ackOf("n1"))
	}
	h, ok := c.Held("a")
	if !ok || h.Version != "v1" || !proto.Equal(h.CLA, cla("a", "host-v1")) || h.Resource != proto.Message(h.CLA) {
		t.Fatalf("Get(a) = %+v, %v", h, ok)
	}
	if h.ReceivedAt.IsZero() {
		t.Error("ReceivedAt not set")
	}
	waitFor(t, c, "ACK counted", func(s State) bool { return s.Stats().ACKs == 1 })
	st := c.Stats()
	if st.Responses != 1 || st.Resources != 2 || st.Removals != 0 || st.NACKs != 0 || st.Requests != 2 ||
		st.Streams != 1 || st.Reconnects != 0 || len(st.Violations) != 0 {
		t.Errorf("Stats = %+v", st)
	}
	if wantBytes := uint64(proto.Size(r)); st.Bytes != wantBytes {
		t.Errorf("Stats.Bytes = %d, want %d", st.Bytes, wantBytes)
	}
}

func TestSubscriptionChanges(t *testing.T) {
	f := newFake(t)
	c := startClient(t, f, Config{})
	fs := f.nextStream(t)
	// A first request with no names would mean wildcard: nothing may go
	// out before the client wants something, so the stream's first request
	// is the subscription.
	c.Subscribe("a")
	if got := fs.recv(t); got.GetNode() == nil || !slices.Equal(got.GetResourceNamesSubscribe(), []string{"a"}) {
		t.Fatalf("first request = %v", got)
	}
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))

	c.Subscribe("c", "b", "a", "", "*") // a is already wanted; "" and "*" are not names
	want := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURLClusterLoadAssignment, ResourceNamesSubscribe: []string{"b", "c"}}
	if got := fs.recv(t); !proto.Equal(got, want) {
		t.Fatalf("subscribe:\n got %v\nwant %v", got, want)
	}

	c.Unsubscribe("a", "zzz")
	want = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURLClusterLoadAssignment, ResourceNamesUnsubscribe: []string{"a"}}
	if got := fs.recv(t); !proto.Equal(got, want) {
		t.Fatalf("unsubscribe:\n got %v\nwant %v", got, want)
	}
	if _, ok := c.Held("a"); ok {
		t.Error("Unsubscribe kept the resource")
	}
	if got := c.Subscribed(); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("Subscribed() = %v", got)
	}
}

func TestRejectedResponses(t *testing.T) {
	badCLA := cla("a", "host-bad")
	badCLA.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)

	tests := []struct {
		name       string
		nack       func(*discoveryv3.DeltaDiscoveryResponse) error
		resources  func(t *testing.T) []*discoveryv3.Resource
		removed    []string
		wantKind   ViolationKind // 0: a NACK that is not the server's fault
		wantDetail string
	}{{
		name: "hook rejects",
		nack: func(r *discoveryv3.DeltaDiscoveryResponse) error {
			if r.GetNonce() == "bad" {
				return errors.New("not today")
			}
			return nil
		},
		resources:  func(t *testing.T) []*discoveryv3.Resource { return []*discoveryv3.Resource{res(t, "a", "v2")} },
		wantDetail: "not today",
	}, {
		name: "duplicate name",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{res(t, "a", "v2"), res(t, "a", "v3")}
		},
		wantKind:   DuplicateName,
		wantDetail: `"a" appears more than once`,
	}, {
		name:       "updated and removed",
		resources:  func(t *testing.T) []*discoveryv3.Resource { return []*discoveryv3.Resource{res(t, "a", "v2")} },
		removed:    []string{"a"},
		wantKind:   UpdatedAndRemoved,
		wantDetail: `"a" is both updated and removed`,
	}, {
		name: "undecodable Any",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Version: "v2", Resource: &anypb.Any{
				TypeUrl: TypeURLClusterLoadAssignment, Value: []byte{0xff},
			}}}
		},
		wantKind:   InvalidResource,
		wantDetail: "decode ClusterLoadAssignment",
	}, {
		name: "Any of another type",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Version: "v2", Resource: mustAny(t, &clusterv3.Cluster{Name: "a"})}}
		},
		wantKind:   InvalidResource,
		wantDetail: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
	}, {
		name: "no body",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Version: "v2"}}
		},
		wantKind:   InvalidResource,
		wantDetail: "no resource body",
	}, {
		name: "fails Validate",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Version: "v2", Resource: mustAny(t, badCLA)}}
		},
		wantKind:   InvalidResource,
		wantDetail: "LoadBalancingWeight",
	}, {
		name: "cluster_name differs from name",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Version: "v2", Resource: mustAny(t, cla("other", "h"))}}
		},
		wantKind:   InvalidResource,
		wantDetail: `carries cluster_name "other"`,
	}, {
		name: "missing version",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Name: "a", Resource: mustAny(t, cla("a", "h"))}}
		},
		wantKind:   MissingVersion,
		wantDetail: `"a" has no version`,
	}, {
		name: "no name",
		resources: func(t *testing.T) []*discoveryv3.Resource {
			return []*discoveryv3.Resource{{Version: "v2", Resource: mustAny(t, cla("a", "h"))}}
		},
		wantKind:   InvalidResource,
		wantDetail: "has no name",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, fs := connect(t, Config{NACK: tt.nack}, "a", "b", "c")
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "b", "v1")))
			before := c.HeldAll()

			// b@v2 and the removal of c are valid on their own: the NACK
			// must reject them with the rest.
			bad := resp("bad", append([]string{"c"}, tt.removed...), append(tt.resources(t), res(t, "b", "v2"))...)
			got := fs.exchange(t, bad)
			if got.GetResponseNonce() != "bad" || got.GetErrorDetail().GetCode() != int32(codes.Internal) ||
				!strings.Contains(got.GetErrorDetail().GetMessage(), tt.wantDetail) || got.GetNode() != nil {
				t.Fatalf("NACK = %v, want nonce bad, code INTERNAL and a message containing %q", got, tt.wantDetail)
			}

			after := c.HeldAll()
			if !maps.EqualFunc(before, after, func(x, y Held) bool {
				return x.Version == y.Version && proto.Equal(x.CLA, y.CLA) && x.ReceivedAt.Equal(y.ReceivedAt)
			}) {
				t.Errorf("state changed by a NACKed response:\nbefore %v\n after %v", versions(before), versions(after))
			}
			if c.Removed("c") {
				t.Error("removal in a NACKed response was applied")
			}

			var wantKinds []ViolationKind
			if tt.wantKind != 0 {
				wantKinds = []ViolationKind{tt.wantKind}
			}
			if got := kinds(c.Violations()); !slices.Equal(got, wantKinds) {
				t.Errorf("violations = %v, want %v", c.Violations(), wantKinds)
			}

			// The client goes on accepting good responses after a NACK.
			if got := fs.exchange(t, resp("n3", nil, res(t, "b", "v3"))); !proto.Equal(got, ackOf("n3")) {
				t.Fatalf("after NACK: got %v, want ACK of n3", got)
			}
			waitFor(t, c, "counters", func(s State) bool { st := s.Stats(); return st.ACKs == 2 && st.NACKs == 1 })
			if h, _ := c.Held("b"); h.Version != "v3" {
				t.Errorf("b = %q after good response, want v3", h.Version)
			}
		})
	}
}

func TestRemovals(t *testing.T) {
	c, fs := connect(t, Config{}, "a", "b", "c")
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "b", "v1")))

	// c was never delivered: its removal is how a server says it does not
	// exist. A removal of a name never subscribed is ignored, not a
	// violation.
	if got := fs.exchange(t, resp("n2", []string{"a", "c", "never"})); !proto.Equal(got, ackOf("n2")) {
		t.Fatalf("got %v, want ACK of n2", got)
	}
	if _, ok := c.Held("a"); ok {
		t.Error("a still held after removal")
	}
	for name, want := range map[string]bool{"a": true, "c": true, "b": false, "never": false, "unknown": false} {
		if got := c.Removed(name); got != want {
			t.Errorf("Removed(%q) = %v, want %v", name, got, want)
		}
	}
	if got := versions(c.HeldAll()); !maps.Equal(got, map[string]string{"b": "v1"}) {
		t.Errorf("held = %v", got)
	}

	fs.exchange(t, resp("n3", nil, res(t, "a", "v2")))
	if c.Removed("a") {
		t.Error("a still marked removed after a new version")
	}
	c.Unsubscribe("c")
	if c.Removed("c") {
		t.Error("unsubscribed name still marked removed")
	}
	if st := c.Stats(); st.Removals != 3 || len(st.Violations) != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestReconnect(t *testing.T) {
	tests := []struct {
		name string
		drop func(c *Client, fs *fakeStream)
	}{
		{"Disconnect", func(c *Client, fs *fakeStream) { c.Disconnect() }},
		{"server error", func(c *Client, fs *fakeStream) { fs.end <- grpcstatus.Error(codes.Unavailable, "going away") }},
		{"server closes", func(c *Client, fs *fakeStream) { fs.end <- nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			c := startClient(t, f, Config{NodeID: "n", Cluster: "cl"})
			c.Subscribe("a", "b", "gone")
			fs := f.nextStream(t)
			fs.recv(t)
			fs.exchange(t, resp("n1", []string{"gone"}, res(t, "a", "v1"), res(t, "b", "v2")))
			c.Subscribe("c")
			if got := fs.recv(t); !slices.Equal(got.GetResourceNamesSubscribe(), []string{"c"}) {
				t.Fatalf("subscribe c: %v", got)
			}

			tt.drop(c, fs)
			fs2 := f.nextStream(t)
			want := &discoveryv3.DeltaDiscoveryRequest{
				Node:                    &corev3.Node{Id: "n", Cluster: "cl"},
				TypeUrl:                 TypeURLClusterLoadAssignment,
				ResourceNamesSubscribe:  []string{"a", "b", "c", "gone"},
				InitialResourceVersions: map[string]string{"a": "v1", "b": "v2"},
			}
			if got := fs2.recv(t); !proto.Equal(got, want) {
				t.Fatalf("first request after reconnect:\n got %v\nwant %v", got, want)
			}
			// Nonces are per stream: reusing one from the old stream is fine.
			if got := fs2.exchange(t, resp("n1", nil, res(t, "c", "v1"))); !proto.Equal(got, ackOf("n1")) {
				t.Fatalf("got %v, want ACK of n1", got)
			}
			if st := c.Stats(); st.Streams != 2 || st.Reconnects != 1 || len(st.Violations) != 0 {
				t.Errorf("Stats = %+v", st)
			}
			if got := versions(c.HeldAll()); !maps.Equal(got, map[string]string{"a": "v1", "b": "v2", "c": "v1"}) {
				t.Errorf("held = %v", got)
			}
		})
	}
}

func TestViolations(t *testing.T) {
	clusterType := "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	tests := []struct {
		name     string
		cfg      Config
		script   func(t *testing.T, c *Client, fs *fakeStream)
		want     []ViolationKind
		wantHeld map[string]string
	}{{
		name: "reused nonce",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
			// Still ACKed: Envoy would not notice.
			if got := fs.exchange(t, resp("n1", nil, res(t, "a", "v2"))); !proto.Equal(got, ackOf("n1")) {
				t.Errorf("got %v, want ACK of n1", got)
			}
		},
		want:     []ViolationKind{ReusedNonce},
		wantHeld: map[string]string{"a": "v2"},
	}, {
		name: "empty nonce",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.exchange(t, resp("", nil, res(t, "a", "v1")))
		},
		want:     []ViolationKind{EmptyNonce},
		wantHeld: map[string]string{"a": "v1"},
	}, {
		name: "missing version",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			r := res(t, "a", "v1")
			r.Version = ""
			if got := fs.exchange(t, resp("n1", nil, r)); got.GetErrorDetail() == nil {
				t.Errorf("got %v, want NACK", got)
			}
		},
		want:     []ViolationKind{MissingVersion},
		wantHeld: map[string]string{},
	}, {
		name: "unrequested type",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: clusterType, Nonce: "n1", Resources: []*discoveryv3.Resource{
				{Name: "a", Version: "v1", Resource: mustAny(t, &clusterv3.Cluster{Name: "a"})},
			}})
			// Dropped without ACK: the next request answers the next response.
			if got := fs.exchange(t, resp("n2", nil, res(t, "a", "v2"))); !proto.Equal(got, ackOf("n2")) {
				t.Errorf("got %v, want ACK of n2", got)
			}
		},
		want:     []ViolationKind{UnrequestedType},
		wantHeld: map[string]string{"a": "v2"},
	}, {
		name: "unsubscribed name",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			// The rest of the response is applied and ACKed.
			if got := fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "zzz", "v1"))); !proto.Equal(got, ackOf("n1")) {
				t.Errorf("got %v, want ACK of n1", got)
			}
		},
		want:     []ViolationKind{UnsubscribedName},
		wantHeld: map[string]string{"a": "v1"},
	}, {
		name: "newly subscribed name",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
			c.Subscribe("b")
			fs.recv(t) // the server now knows about b
			fs.exchange(t, resp("n2", nil, res(t, "b", "v1")))
		},
		wantHeld: map[string]string{"a": "v1", "b": "v1"},
	}, {
		name: "response crossing an unsubscribe",
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
			c.Unsubscribe("a")
			fs.recv(t)
			// The server may have sent this before reading the unsubscribe.
			if got := fs.exchange(t, resp("n2", []string{"a"}, nil...)); !proto.Equal(got, ackOf("n2")) {
				t.Errorf("got %v, want ACK of n2", got)
			}
			fs.exchange(t, resp("n3", nil, res(t, "a", "v2")))
			if c.Removed("a") {
				t.Error("removal of an unsubscribed name recorded")
			}
		},
		wantHeld: map[string]string{},
	}, {
		name: "wildcard accepts any name",
		cfg:  Config{Wildcard: true},
		script: func(t *testing.T, c *Client, fs *fakeStream) {
			fs.exchange(t, resp("n1", nil, res(t, "a", "v1"), res(t, "zzz", "v1")))
			fs.exchange(t, resp("n2", []string{"yyy"}))
			if !c.Removed("yyy") {
				t.Error("wildcard removal not recorded")
			}
		},
		wantHeld: map[string]string{"a": "v1", "zzz": "v1"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, fs := connect(t, tt.cfg, "a")
			tt.script(t, c, fs)
			vs := c.Violations()
			if got := kinds(vs); !slices.Equal(got, tt.want) {
				t.Errorf("violations = %v, want %v", vs, tt.want)
			}
			for _, v := range vs {
				if v.Detail == "" || v.At.IsZero() || v.Stream != 1 || !strings.Contains(v.String(), v.Kind.String()) {
					t.Errorf("incomplete violation %+v", v)
				}
			}
			if got := versions(c.HeldAll()); !maps.Equal(got, tt.wantHeld) {
				t.Errorf("held = %v, want %v", got, tt.wantHeld)
			}
		})
	}
}

func TestWildcardFirstRequest(t *testing.T) {
	f := newFake(t)
	c := startClient(t, f, Config{Wildcard: true})
	fs := f.nextStream(t)
	// Wildcard needs no names, so the first request goes out at once.
	if got := fs.recv(t); !slices.Equal(got.GetResourceNamesSubscribe(), []string{"*"}) {
		t.Fatalf("first request = %v", got)
	}
	c.Subscribe("x")
	if got := fs.recv(t); !slices.Equal(got.GetResourceNamesSubscribe(), []string{"x"}) {
		t.Fatalf("second request = %v", got)
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func TestStall(t *testing.T) {
	// A fixed window: with gRPC's dynamic (BDP) window the client would
	// buffer megabytes before pushing back.
	const window = 64 << 10
	var received atomic.Int64 // bytes the client's transport read from the socket
	c, fs := connect(t, Config{DialOptions: []grpc.DialOption{
		grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, &received}, nil
		}),
	}}, "a")

	// Few, long addresses: the bytes are what flow control counts, and few
	// endpoints keep decoding cheap.
	big := make([]string, 64)
	for i := range big {
		big[i] = fmt.Sprint(i, strings.Repeat("x", 1000))
	}
	body := mustAny(t, cla("a", big...))
	const n = 40 // about 2.6 MB, far beyond the window
	c.Stall(true)
	sender := make(chan struct{})
	go func() {
		defer close(sender)
		for i := range n {
			r := resp(fmt.Sprint("n", i), nil, &discoveryv3.Resource{Name: "a", Version: fmt.Sprint("v", i), Resource: body})
			select {
			case fs.out <- r:
			case <-fs.ctx.Done():
				return
			}
		}
	}()

	// The positive sign that flow control holds the server back: most of a window has reached
	// the client's transport and sits there unread (what the client read is in Stats().Bytes;
	// gRPC hands window back in steps, so not all of it is ever outstanding). A client that
	// kept reading would hand the window back as fast as it fills.
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return received.Load()-int64(c.Stats().Bytes) >= window/2, nil
	})
	if err != nil {
		t.Fatalf("no window ever waited unread in the client (%d bytes received, %d read): %v",
			received.Load(), c.Stats().Bytes, err)
	}
	if sent := fs.sent.Load(); sent >= n {
		t.Fatalf("server sent all %d responses to a stalled client", sent)
	}
	// A Recv already waiting when Stall was called may return one response.
	if got := c.Stats().Responses; got > 1 {
		t.Fatalf("stalled client read %d responses", got)
	}

	c.Stall(false)
	waitFor(t, c, "all responses", func(s State) bool { return s.Stats().Responses == n })
	<-sender
	waitFor(t, c, "all ACKs", func(s State) bool { return s.Stats().ACKs == n })
	if h, _ := c.Held("a"); h.Version != fmt.Sprint("v", n-1) {
		t.Errorf("a at %q after stall", h.Version)
	}
}

func TestOnApply(t *testing.T) {
	applied := make(chan Applied, 10)
	c, fs := connect(t, Config{OnApply: func(a Applied) { applied <- a }}, "a", "b")
	fs.exchange(t, resp("n1", []string{"b", "unwanted"}, res(t, "a", "v1")))
	// A NACKed response is not applied, so not reported.
	fs.exchange(t, resp("n2", nil, res(t, "a", "")))

	a := <-applied
	if a.Nonce != "n1" || a.ReceivedAt.IsZero() ||
		!slices.Equal(a.Updated, []NameVersion{{"a", "v1"}}) || !slices.Equal(a.Removed, []string{"b"}) {
		t.Errorf("Applied = %+v", a)
	}
	if h, _ := c.Held("a"); !h.ReceivedAt.Equal(a.ReceivedAt) {
		t.Errorf("ReceivedAt differs: held %v, applied %v", h.ReceivedAt, a.ReceivedAt)
	}
	select {
	case a := <-applied:
		t.Errorf("NACKed response reported: %+v", a)
	default:
	}
}

// No WaitFor sees a response before OnApply has returned for it: a test that waited for a
// response finds whatever its OnApply recorded about it.
func TestOnApplyReturnsBeforeWaitersSeeTheResponse(t *testing.T) {
	var (
		c         *Client
		mu        sync.Mutex
		recorded  []string
		seenEarly = make(chan error, 1)
	)
	held := func(s State) bool { h, ok := s.Held("a"); return ok && h.Version == "v1" }
	c, fs := connect(t, Config{OnApply: func(a Applied) {
		// The response is applied, but a waiter must not see it yet: WaitFor with a context
		// already done returns nil only if the predicate held at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		seenEarly <- c.WaitFor(ctx, held)
		mu.Lock()
		for _, u := range a.Updated {
			recorded = append(recorded, u.Name+"@"+u.Version)
		}
		mu.Unlock()
	}}, "a")
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
	waitFor(t, c, "a@v1", held)
	mu.Lock()
	got := slices.Clone(recorded)
	mu.Unlock()
	if !slices.Equal(got, []string{"a@v1"}) {
		t.Errorf("after WaitFor saw a@v1, OnApply had recorded %v", got)
	}
	if err := <-seenEarly; err == nil {
		t.Error("a WaitFor saw the response while OnApply was still running")
	}
}

func TestWaitFor(t *testing.T) {
	c, fs := connect(t, Config{}, "a")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- c.WaitFor(ctx, func(s State) bool { h, ok := s.Held("a"); return ok && h.Version == "v2" })
	}()
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
	fs.exchange(t, resp("n2", nil, res(t, "a", "v2")))
	if err := <-done; err != nil {
		t.Fatalf("WaitFor: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	never := func(State) bool { return false }
	if err := c.WaitFor(ctx, never); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor past deadline = %v", err)
	}

	go func() { done <- c.WaitFor(context.Background(), never) }()
	_ = c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("WaitFor on a closed client = %v", err)
	}
	// What was held stays readable after Close.
	if err := c.WaitFor(context.Background(), func(s State) bool { return s.HeldLen() == 1 }); err != nil {
		t.Errorf("WaitFor a held state after Close = %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	if err := New(Config{Target: "x"}).Start(context.Background()); err == nil {
		t.Error("Start without NodeID succeeded")
	}
	if err := New(Config{NodeID: "n"}).Start(context.Background()); err == nil {
		t.Error("Start without Target or Conn succeeded")
	}
	c := New(Config{NodeID: "n", Target: "127.0.0.1:1"})
	if err := c.Close(); err != nil {
		t.Errorf("Close of an unstarted client: %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v", err)
	}
	<-c.Done()

	// Cancelling the Start context stops the client, even one that never
	// reached its server.
	f := newFake(t)
	c = New(Config{NodeID: "n", Target: f.addr})
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	f.nextStream(t)
	cancel()
	<-c.Done()
	_ = c.Close()
}

func TestRunAndSharedConn(t *testing.T) {
	f := newFake(t)
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	c1 := New(Config{NodeID: "one", Conn: conn})
	c1.Subscribe("a")
	go func() { ran <- c1.Run(ctx) }()
	c2 := New(Config{NodeID: "two", Conn: conn})
	c2.Subscribe("a")
	if err := c2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for range 2 {
		ids[f.nextStream(t).recv(t).GetNode().GetId()] = true
	}
	if !ids["one"] || !ids["two"] {
		t.Fatalf("nodes seen: %v", ids)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run = %v", err)
	}
	_ = c2.Close()
	// The shared connection is the caller's and must still work.
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	if _, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx); err != nil {
		t.Errorf("shared connection unusable after clients closed: %v", err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	// Checked here as well as in TestMain, so that a leak names its test.
	f := newFake(t)
	c := startClient(t, f, Config{})
	c.Subscribe("a")
	fs := f.nextStream(t)
	fs.recv(t)
	fs.exchange(t, resp("n1", nil, res(t, "a", "v1")))
	// Leave the client stalled with a response in flight, the hardest
	// state to stop from.
	c.Stall(true)
	fs.send(t, resp("n2", nil, res(t, "a", "v2")))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f.stop()
	goleak.VerifyNone(t)
}
