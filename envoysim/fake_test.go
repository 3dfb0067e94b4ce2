package envoysim

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// timeout bounds every wait in these tests; a healthy run never comes close.
const timeout = 5 * time.Second

// fakeADS is a scripted Delta ADS server: each stream is handed to the test,
// which reads the client's requests and decides every response.
type fakeADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	streams chan *fakeStream
	addr    string
	// stop stops the server and waits for it; it is idempotent and also
	// runs when the test ends.
	stop func()
}

// fakeStream is one server-side stream as the test drives it.
type fakeStream struct {
	ctx  context.Context
	reqs chan *discoveryv3.DeltaDiscoveryRequest
	out  chan *discoveryv3.DeltaDiscoveryResponse
	end  chan error
	sent atomic.Int64 // responses whose Send has returned
}

func (f *fakeADS) DeltaAggregatedResources(s grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx := s.Context()
	fs := &fakeStream{
		ctx:  ctx,
		reqs: make(chan *discoveryv3.DeltaDiscoveryRequest, 100),
		out:  make(chan *discoveryv3.DeltaDiscoveryResponse),
		end:  make(chan error, 1),
	}
	select {
	case f.streams <- fs:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The reader cannot be waited for: Recv returns only once the handler
	// has returned or the client goes away. It exits right after either.
	go func() {
		for {
			req, err := s.Recv()
			if err != nil {
				return
			}
			select {
			case fs.reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case r := <-fs.out:
			if err := s.Send(r); err != nil {
				return err
			}
			fs.sent.Add(1)
		case err := <-fs.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// newFake serves a fakeADS on 127.0.0.1 until the test ends.
func newFake(t *testing.T, opts ...grpc.ServerOption) *fakeADS {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeADS{streams: make(chan *fakeStream, 10), addr: lis.Addr().String()}
	srv := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, f)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			srv.Stop()
			<-served
		})
	}
	t.Cleanup(f.stop)
	return f
}

// nextStream waits for the client to open a stream.
func (f *fakeADS) nextStream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case fs := <-f.streams:
		return fs
	case <-time.After(timeout):
		t.Fatal("no stream opened")
		return nil
	}
}

// recv waits for the client's next request.
func (fs *fakeStream) recv(t *testing.T) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case req := <-fs.reqs:
		return req
	case <-time.After(timeout):
		t.Fatal("no request received")
		return nil
	}
}

// send hands a response to the stream's sender.
func (fs *fakeStream) send(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) {
	t.Helper()
	select {
	case fs.out <- r:
	case <-fs.ctx.Done():
		t.Fatal("stream ended before the response could be sent")
	case <-time.After(timeout):
		t.Fatal("response not sent")
	}
}

// exchange sends a response and returns the client's answer to it.
func (fs *fakeStream) exchange(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	fs.send(t, r)
	return fs.recv(t)
}

// cla is a valid assignment for cluster name with one endpoint per address.
func cla(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       a,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
			}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatalf("anypb.New: %v", err)
	}
	return a
}

// res is a valid delta resource for name at version; its content differs
// between versions, so a test can tell which one the client holds.
func res(t *testing.T, name, version string) *discoveryv3.Resource {
	t.Helper()
	return &discoveryv3.Resource{Name: name, Version: version, Resource: mustAny(t, cla(name, "host-"+version))}
}

// resp builds a CLA response.
func resp(nonce string, removed []string, rs ...*discoveryv3.Resource) *discoveryv3.DeltaDiscoveryResponse {
	return &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl:          TypeURLClusterLoadAssignment,
		Nonce:            nonce,
		Resources:        rs,
		RemovedResources: removed,
	}
}

// ackOf is the request the client must send to ACK nonce.
func ackOf(nonce string) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURLClusterLoadAssignment, ResponseNonce: nonce}
}

// startClient starts a client against f, closed when the test ends.
func startClient(t *testing.T, f *fakeADS, cfg Config) *Client {
	t.Helper()
	if cfg.Target == "" && cfg.Conn == nil {
		cfg.Target = f.addr
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "cluster-1"
	}
	c := New(cfg)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// connect starts a client subscribed to names and returns it with its
// stream, after checking and consuming the first request.
func connect(t *testing.T, cfg Config, names ...string) (*Client, *fakeStream) {
	t.Helper()
	f := newFake(t)
	c := startClient(t, f, cfg)
	c.Subscribe(names...)
	fs := f.nextStream(t)
	if req := fs.recv(t); req.GetNode().GetId() != c.cfg.NodeID {
		t.Fatalf("first request has no node: %v", req)
	}
	return c, fs
}

// waitFor waits for pred, failing the test after timeout.
func waitFor(t *testing.T, c *Client, what string, pred func(State) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.WaitFor(ctx, pred); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// kinds lists the kinds of vs, for comparisons.
func kinds(vs []Violation) []ViolationKind {
	var ks []ViolationKind
	for _, v := range vs {
		ks = append(ks, v.Kind)
	}
	return ks
}

// versions maps held names to versions, for comparisons.
func versions(m map[string]Held) map[string]string {
	out := make(map[string]string, len(m))
	for n, h := range m {
		out[n] = h.Version
	}
	return out
}
