package delta

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"go.uber.org/goleak"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/deltaeds/deltaeds/xds"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type req = discoveryv3.DeltaDiscoveryRequest

// TestProtocol has one case per rule of the Delta xDS protocol the server
// follows. Each case runs on its own server and stream; the store is synced
// and holds a and b unless the case says otherwise.
func TestProtocol(t *testing.T) {
	cases := []struct {
		name string
		opts Config
		run  func(t *testing.T, f *fixture, rs *rawStream)
	}{
		{"node id is required on the first request", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			if code := status.Code(rs.fails()); code != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument", code)
			}
		}},
		{"later requests may omit the node", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesSubscribe: []string{"b"}})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"subscribed names are sent with version, nonce and system version", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"b", "a"}})
			resp := rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a", "b"}) {
				t.Fatalf("got %v", got)
			}
			if resp.Nonce == "" || resp.SystemVersionInfo == "" || resp.TypeUrl != EndpointType {
				t.Fatalf("nonce %q system_version_info %q type %q", resp.Nonce, resp.SystemVersionInfo, resp.TypeUrl)
			}
			for _, r := range resp.Resources {
				if r.Version != f.version(r.Name) || decodeCLA(t, r).ClusterName != r.Name {
					t.Fatalf("resource %s@%s does not match the store", r.Name, r.Version)
				}
			}
		}},
		{"a missing name is answered at once with an empty CLA, never a removal", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			// Envoy ignores EDS removals and would keep routing to old hosts.
			rs.first(&req{ResourceNamesSubscribe: []string{"a", "missing"}})
			resp := rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a", "missing"}) || len(resp.RemovedResources) != 0 {
				t.Fatalf("got %s", summary(resp))
			}
			if !emptyResource(t, resp, "missing") {
				t.Fatalf("missing was not sent as an empty CLA: %s", summary(resp))
			}
			rs.ack(resp)
			f.set(1, "missing")
			resp = rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"missing"}) || emptyResource(t, resp, "missing") {
				t.Fatalf("created name not sent: %s", summary(resp))
			}
		}},
		{"a name deleted while its response is unacknowledged ends as an empty CLA", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			f.set(9, "a")
			f.del("a")
			rs.ack(resp)
			resp = rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a"}) || len(resp.RemovedResources) != 0 || !emptyResource(t, resp, "a") {
				t.Fatalf("got %s, want a's empty CLA", summary(resp))
			}
			rs.ack(resp)
			rs.quiet()
		}},
		{"a NACKed batch is resent one resource at a time; one rejected alone is not resent", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a", "b"}})
			resp := rs.next()
			nack := func(r *discoveryv3.DeltaDiscoveryResponse) {
				rs.send(&req{ResponseNonce: r.Nonce, ErrorDetail: &statuspb.Status{Code: int32(codes.Internal), Message: "b: bad endpoints"}})
			}
			nack(resp)
			first := rs.next()
			if got := names(first); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("first resend %s, want a alone", summary(first))
			}
			rs.ack(first)
			second := rs.next()
			if got := names(second); !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("second resend %s, want b alone", summary(second))
			}
			nack(second)
			rs.quiet() // b, rejected alone, is not resent
			if n := f.counter("deltaeds_xds_nack_resends_total"); n != 2 {
				t.Fatalf("nack resends = %v, want 2", n)
			}
			if n := f.counter("deltaeds_xds_nacks_total"); n != 2 {
				t.Fatalf("nacks = %v, want 2", n)
			}
		}},
		{"unsubscribing sends nothing back and stops updates", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a", "b"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesUnsubscribe: []string{"a"}})
			rs.quiet() // the unsubscription is applied
			f.set(2, "a")
			rs.quiet()
			f.set(2, "b")
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"resubscribing after unsubscribing sends the resource again", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesUnsubscribe: []string{"a"}})
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"subscribing again while subscribed sends the resource again", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			// Envoy removes a cluster and adds it back without unsubscribing
			// in between, and waits for the CLA it dropped.
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"explicit wildcard gets everything, then additions and removals", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"*"}})
			resp := rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a", "b"}) {
				t.Fatalf("got %v", got)
			}
			rs.ack(resp)
			f.set(1, "c")
			resp = rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"c"}) {
				t.Fatalf("got %v", got)
			}
			rs.ack(resp)
			f.del("a")
			resp = rs.next()
			if len(resp.Resources) != 0 || !reflect.DeepEqual(resp.RemovedResources, []string{"a"}) {
				t.Fatalf("got %s", summary(resp))
			}
		}},
		{"legacy wildcard: a first request with no names", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a", "b"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"legacy wildcard continues after the client names resources, until it unsubscribes *", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.quiet() // a is held already: nothing to send
			// quiet unsubscribed its probe under the wildcard: answered.
			resp := rs.next()
			if len(resp.Resources) != 0 || !reflect.DeepEqual(resp.RemovedResources, []string{"probe-1"}) {
				t.Fatalf("got %s, want the probe's removal", summary(resp))
			}
			rs.ack(resp)
			f.set(3, "b")
			resp = rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("got %v: the wildcard should continue", got)
			}
			rs.ack(resp)
			rs.send(&req{ResourceNamesUnsubscribe: []string{"*"}})
			rs.quiet()
			f.set(4, "b")
			f.set(4, "a")
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"a first request that only unsubscribes is not a legacy wildcard", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesUnsubscribe: []string{"x"}})
			rs.quiet() // nothing of a and b is sent
		}},
		{"under the wildcard, unsubscribing a named resource is answered", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"*", "a", "gone"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesUnsubscribe: []string{"a", "gone"}})
			resp := rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a"}) || !reflect.DeepEqual(resp.RemovedResources, []string{"gone"}) {
				t.Fatalf("got %s, want a (the wildcard covers it) and the removal of gone", summary(resp))
			}
		}},
		{"initial_resource_versions: current not resent, stale resent, gone sent empty", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{
				ResourceNamesSubscribe:  []string{"a", "b", "gone"},
				InitialResourceVersions: map[string]string{"a": f.version("a"), "b": "old", "gone": "v1"},
			})
			resp := rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"b", "gone"}) || len(resp.RemovedResources) != 0 || !emptyResource(t, resp, "gone") {
				t.Fatalf("got %s", summary(resp))
			}
		}},
		{"nothing is resent when the client holds everything", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{
				ResourceNamesSubscribe:  []string{"a", "b"},
				InitialResourceVersions: map[string]string{"a": f.version("a"), "b": f.version("b")},
			})
			rs.quiet()
		}},
		{"at most one response in flight; changes meanwhile go out together", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a", "b"}})
			resp := rs.next()
			f.set(5, "a")
			f.set(5, "b")
			f.set(6, "a")
			rs.ack(resp)
			resp = rs.next()
			if got := names(resp); !reflect.DeepEqual(got, []string{"a", "b"}) {
				t.Fatalf("got %v", got)
			}
			if resp.Resources[0].Version != f.version("a") {
				t.Fatal("a was not sent at its latest version")
			}
			rs.ack(resp)
			rs.quiet()
		}},
		{"NACK is counted and the same content is not resent; the next change is", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			rs.send(&req{ResponseNonce: resp.Nonce, ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad endpoints"}})
			rs.quiet()
			if n := f.counter("deltaeds_xds_nacks_total"); n != 1 {
				t.Fatalf("nacks = %v", n)
			}
			f.set(7, "a")
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
			if streams := f.server.Streams(); len(streams) != 1 || streams[0].LastNACKError != "bad endpoints" {
				t.Fatalf("streams = %+v", streams)
			}
		}},
		{"a stale nonce acknowledges nothing but changes the subscription", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			first := rs.next()
			rs.ack(first)
			f.set(8, "a")
			second := rs.next()
			// Stale: names the first response while the second is in flight.
			rs.send(&req{ResponseNonce: first.Nonce, ResourceNamesSubscribe: []string{"b"}})
			rs.ack(second) // the real ACK: b, subscribed by the stale request, follows
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("got %v", got)
			}
			if n := f.counter("deltaeds_xds_stale_nonces_total"); n != 1 {
				t.Fatalf("stale nonces = %v", n)
			}
		}},
		{"a response stays under the size limit; larger batches are split", Config{MaxResponseBytes: 200}, func(t *testing.T, f *fixture, rs *rawStream) {
			var all []string
			for i := 0; i < 10; i++ {
				all = append(all, "n"+string(rune('0'+i)))
			}
			f.set(9, all...)
			rs.first(&req{ResourceNamesSubscribe: all})
			got := map[string]bool{}
			responses := 0
			for len(got) < len(all) {
				resp := rs.next()
				responses++
				size := 0
				for _, r := range resp.Resources {
					if got[r.Name] {
						t.Fatalf("%s sent twice", r.Name)
					}
					got[r.Name] = true
					size += len(r.Resource.Value)
				}
				if len(resp.Resources) > 1 && size > 200 {
					t.Fatalf("response of %d resource bytes", size)
				}
				rs.ack(resp)
			}
			if responses < 2 {
				t.Fatalf("batch not split: %d responses", responses)
			}
			rs.quiet()
		}},
		{"an unknown type URL does not break the stream", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
			rs.send(&req{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNamesSubscribe: []string{"x"}})
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
			if n := f.counter("deltaeds_xds_ignored_requests_total"); n != 2 {
				t.Fatalf("ignored = %v", n)
			}
		}},
		{"many unknown type URLs: bounded metric series, the stream stays up", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener"})
			for i := range 50 {
				rs.send(&req{TypeUrl: fmt.Sprintf("type.googleapis.com/hostile.Type%d", i)})
			}
			rs.send(&req{ResourceNamesSubscribe: []string{"a"}})
			if got := names(rs.next()); !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("got %v", got)
			}
			if n := f.counter("deltaeds_xds_ignored_requests_total"); n != 51 {
				t.Fatalf("ignored = %v, want 51", n)
			}
			labels := f.labels("deltaeds_xds_ignored_requests_total", "type_url")
			if want := []string{"other", "type.googleapis.com/envoy.config.listener.v3.Listener"}; !reflect.DeepEqual(labels, want) {
				t.Fatalf("type_url labels %v, want %v", labels, want)
			}
		}},
		{"too many names end the stream with ResourceExhausted", Config{MaxNamesPerStream: 3}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a", "b"}})
			rs.ack(rs.next())
			rs.send(&req{ResourceNamesSubscribe: []string{"c", "d"}})
			err := rs.fails()
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max-subscriptions-per-stream") {
				t.Fatalf("err = %v", err)
			}
		}},
		{"too large a request ends the stream with ResourceExhausted", Config{MaxRequestBytes: 1024}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{strings.Repeat("x", 2048)}})
			if code := status.Code(rs.fails()); code != codes.ResourceExhausted {
				t.Fatalf("code %v", code)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			f.set(1, "a", "b")
			f.store.MarkSynced()
			tc.run(t, f, f.open())
		})
	}
}

func TestNothingIsSentBeforeSync(t *testing.T) {
	f := newFixture(t, Config{})
	f.set(1, "a")
	rs := f.open()
	rs.first(&req{ResourceNamesSubscribe: []string{"a", "missing"}})
	// Wait until the server holds the subscription, then prove it is silent:
	// an empty CLA for "missing" before sync would claim it has no endpoints.
	waitFor(t, func() bool { s := f.server.Streams(); return len(s) == 1 && s[0].Subscriptions == 2 })
	select {
	case r := <-rs.recv:
		t.Fatalf("received before sync: %v", r)
	default:
	}
	f.set(2, "a")
	f.store.MarkSynced()
	resp := rs.next()
	if got := names(resp); !reflect.DeepEqual(got, []string{"a", "missing"}) || resp.Resources[0].Version != f.version("a") || !emptyResource(t, resp, "missing") {
		t.Fatalf("got %s", summary(resp))
	}
}

func TestReconnectToRestartedServerResendsNothing(t *testing.T) {
	// Two stores built independently from equal content stand for a server
	// before and after a restart, or for two replicas.
	before := newFixture(t, Config{})
	before.set(1, "a", "b")
	before.store.MarkSynced()
	rs := before.open()
	rs.first(&req{ResourceNamesSubscribe: []string{"a", "b"}})
	resp := rs.next()
	held := map[string]string{}
	for _, r := range resp.Resources {
		held[r.Name] = r.Version
	}
	rs.ack(resp)

	after := newFixture(t, Config{})
	after.set(1, "b", "a")
	after.set(2, "b") // b changed while the client was away
	after.store.MarkSynced()
	rs2 := after.open()
	rs2.first(&req{ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: held})
	resp = rs2.next()
	if got := names(resp); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("resent %v, want only the changed b", got)
	}
	rs2.ack(resp)
	rs2.quiet()
}

func TestDeltaEndpointsServesTheSameProtocol(t *testing.T) {
	f := newFixture(t, Config{})
	f.set(1, "a")
	f.store.MarkSynced()
	s, err := endpointservice.NewEndpointDiscoveryServiceClient(f.conn).DeltaEndpoints(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// type_url may be omitted on the non-aggregated service.
	if err := s.Send(&req{Node: &corev3.Node{Id: "n"}, ResourceNamesSubscribe: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp); !reflect.DeepEqual(got, []string{"a"}) || resp.TypeUrl != EndpointType {
		t.Fatalf("got %s type %s", summary(resp), resp.TypeUrl)
	}
}

func TestStateOfTheWorldIsUnimplemented(t *testing.T) {
	f := newFixture(t, Config{})
	check := func(err error) {
		t.Helper()
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "DELTA_GRPC") {
			t.Fatalf("err = %v", err)
		}
	}
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = ads.Recv()
	check(err)
	eds := endpointservice.NewEndpointDiscoveryServiceClient(f.conn)
	sotw, err := eds.StreamEndpoints(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = sotw.Recv()
	check(err)
	_, err = eds.FetchEndpoints(t.Context(), &discoveryv3.DiscoveryRequest{})
	check(err)
}

// TestStalledStreamDoesNotDelayOthers stalls one client on a response larger
// than gRPC's flow-control window, so the server's write to it blocks, and
// checks that another client still receives its updates.
func TestStalledStreamDoesNotDelayOthers(t *testing.T) {
	f := newFixture(t, Config{MaxResponseBytes: 64 << 20})
	big := cla("big", 1)
	for i := 0; i < 40000; i++ { // about 1.6 MB, far over the 64 KiB window
		big.Endpoints[0].LbEndpoints = append(big.Endpoints[0].LbEndpoints, big.Endpoints[0].LbEndpoints[0])
	}
	if _, err := f.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: "big", Message: big}}); err != nil {
		t.Fatal(err)
	}
	f.set(1, "live")
	f.store.MarkSynced()

	// The stalled client never calls Recv.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stalled, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Send(&req{Node: &corev3.Node{Id: "stalled"}, TypeUrl: EndpointType, ResourceNamesSubscribe: []string{"big", "live"}}); err != nil {
		t.Fatal(err)
	}

	live := f.open()
	live.first(&req{ResourceNamesSubscribe: []string{"live"}})
	live.ack(live.next())
	for port := uint32(2); port < 12; port++ {
		f.set(port, "live")
		resp := live.next()
		if decodeCLA(t, resp.Resources[0]).Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().GetPortValue() != port {
			t.Fatalf("live client got a stale version")
		}
		live.ack(resp)
	}
	cancel()
	for {
		if _, err := stalled.Recv(); err != nil {
			break
		}
	}
}

func TestStopEndsStreams(t *testing.T) {
	f := newFixture(t, Config{})
	f.set(1, "a")
	f.store.MarkSynced()
	rs := f.open()
	rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
	rs.ack(rs.next())
	if err := f.server.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code := status.Code(rs.fails()); code != codes.Unavailable {
		t.Fatalf("code %v", code)
	}
	if n := len(f.server.Streams()); n != 0 {
		t.Fatalf("%d streams left", n)
	}
}

// TestStopRacesNewStreams opens streams while the server stops: every
// stream either is refused or is ended and waited for. The window in which
// a stream joined the handlers' WaitGroup unordered with Stop's Wait is too
// narrow to hit reliably here; e2e's TestShutdownWithStreamsIsRaceFree, which
// found it, hits it with a race-built binary.
func TestStopRacesNewStreams(t *testing.T) {
	for round := 0; round < 5; round++ {
		f := newFixture(t, Config{})
		f.set(1, "a")
		f.store.MarkSynced()
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
				if err != nil {
					return
				}
				_ = s.Send(&req{Node: &corev3.Node{Id: "n"}, TypeUrl: EndpointType, ResourceNamesSubscribe: []string{"a"}})
				for {
					if _, err := s.Recv(); err != nil {
						return
					}
				}
			}()
		}
		if err := f.server.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if n := len(f.server.Streams()); n != 0 {
			t.Fatalf("%d streams outlived Stop", n)
		}
	}
}

// TestPropagationCountsChangesOnly: the propagation histograms measure how
// long a change took to reach a client. A client's first answer for a name
// carries content that may be hours old; counting it would make every
// Envoy that connects look like a slow propagation.
func TestPropagationCountsChangesOnly(t *testing.T) {
	f := newFixture(t, Config{})
	apply := func(name string, port uint32, observed time.Time) {
		t.Helper()
		if _, err := f.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: name, Message: cla(name, port), ObservedAt: observed}}); err != nil {
			t.Fatal(err)
		}
	}
	apply("a", 1, time.Now().Add(-time.Hour))
	f.store.MarkSynced()
	rs := f.open()
	rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
	rs.ack(rs.next())
	rs.quiet() // the ACK is handled
	if n := f.counter("deltaeds_propagation_send_seconds"); n != 0 {
		t.Fatalf("the initial answer was counted as %v propagations", n)
	}
	if n := f.counter("deltaeds_propagation_ack_seconds"); n != 0 {
		t.Fatalf("the initial answer's ACK was counted as %v propagations", n)
	}

	apply("a", 2, time.Now())
	rs.ack(rs.next())
	rs.quiet()
	if n := f.counter("deltaeds_propagation_send_seconds"); n != 1 {
		t.Fatalf("send propagations = %v, want 1", n)
	}
	if n := f.counter("deltaeds_propagation_ack_seconds"); n != 1 {
		t.Fatalf("ACK propagations = %v, want 1", n)
	}
}
