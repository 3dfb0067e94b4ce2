package delta

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/xds"
)

// testTimeout bounds every wait for something that must happen; it is never
// used to assert that something did not happen.
const testTimeout = 10 * time.Second

// EndpointType is the type these tests serve (the package itself uses
// xds.EndpointType; it exports no copy of it).
const EndpointType = xds.EndpointType

// fixture is a real gRPC server on loopback serving a store.
type fixture struct {
	t      *testing.T
	store  *xds.Store
	server *Server
	reg    *prometheus.Registry
	grpc   *grpc.Server
	conn   *grpc.ClientConn
	addr   string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	store := xds.NewStore()
	store.RegisterType(EndpointType, emptyCLA)
	return newFixtureWithStore(t, store, cfg)
}

// emptyCLA is the stand-in deltaeds registers for EDS (watch registers
// translate.EmptyCLA): a subscribed name without endpoints.
func emptyCLA(name string) proto.Message { return &endpointv3.ClusterLoadAssignment{ClusterName: name} }

func newFixtureWithStore(t *testing.T, store *xds.Store, cfg Config) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(reg)
	}
	srv := NewServer(store, cfg)
	g := grpc.NewServer(srv.GRPCServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: store, server: srv, reg: reg, grpc: g, conn: conn, addr: lis.Addr().String()}
	t.Cleanup(f.close)
	return f
}

func (f *fixture) close() {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := f.server.Stop(ctx); err != nil {
		f.t.Errorf("server stop: %v", err)
	}
	f.grpc.Stop()
	_ = f.conn.Close()
}

// set stores CLAs named after names, each with one endpoint at port.
func (f *fixture) set(port uint32, names ...string) {
	f.t.Helper()
	var ups []xds.ResourceUpdate
	for _, n := range names {
		ups = append(ups, xds.ResourceUpdate{Name: n, Message: cla(n, port)})
	}
	if _, err := f.store.Apply(EndpointType, ups); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) del(names ...string) {
	f.t.Helper()
	var ups []xds.ResourceUpdate
	for _, n := range names {
		ups = append(ups, xds.ResourceUpdate{Name: n})
	}
	if _, err := f.store.Apply(EndpointType, ups); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) version(name string) string {
	f.t.Helper()
	r := f.store.Get(EndpointType, name)
	if r == nil {
		f.t.Fatalf("no resource %q", name)
	}
	return r.Version
}

// counter reads a metric's value summed over its label values (for a
// histogram, its number of observations).
func (f *fixture) counter(name string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// labels returns the values of label across a metric's series, sorted.
func (f *fixture) labels(name, label string) []string {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	var values []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					values = append(values, lp.GetValue())
				}
			}
		}
	}
	sort.Strings(values)
	return values
}

func cla(name string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
					}}},
				}},
			}},
		}},
	}
}

// rawStream is a Delta ADS stream driven request by request, so tests control
// every nonce. It is deliberately not Envoy-like: it does only what it is told.
type rawStream struct {
	t      *testing.T
	cancel context.CancelFunc
	s      grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	recv   chan recvResult
	probes int
}

type recvResult struct {
	resp *discoveryv3.DeltaDiscoveryResponse
	err  error
}

func (f *fixture) open() *rawStream {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		f.t.Fatal(err)
	}
	rs := &rawStream{t: f.t, cancel: cancel, s: s, recv: make(chan recvResult, 64)}
	go func() {
		defer close(rs.recv)
		for {
			resp, err := s.Recv()
			rs.recv <- recvResult{resp, err}
			if err != nil {
				return
			}
		}
	}()
	f.t.Cleanup(rs.close)
	return rs
}

func (rs *rawStream) close() {
	rs.cancel()
	for range rs.recv {
	}
}

func (rs *rawStream) send(req *discoveryv3.DeltaDiscoveryRequest) {
	rs.t.Helper()
	if req.TypeUrl == "" {
		req.TypeUrl = EndpointType
	}
	if err := rs.s.Send(req); err != nil {
		rs.t.Fatalf("send: %v", err)
	}
}

// first sends the first request of the stream, with a node.
func (rs *rawStream) first(req *discoveryv3.DeltaDiscoveryRequest) {
	rs.t.Helper()
	req.Node = &corev3.Node{Id: "node-1", Cluster: "test"}
	rs.send(req)
}

func (rs *rawStream) next() *discoveryv3.DeltaDiscoveryResponse {
	rs.t.Helper()
	select {
	case r, ok := <-rs.recv:
		if !ok {
			rs.t.Fatal("stream closed")
		}
		if r.err != nil {
			rs.t.Fatalf("recv: %v", r.err)
		}
		return r.resp
	case <-time.After(testTimeout):
		rs.t.Fatal("no response within the test timeout")
	}
	return nil
}

// fails waits for the stream to end with an error and returns it.
func (rs *rawStream) fails() error {
	rs.t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case r, ok := <-rs.recv:
			if !ok {
				rs.t.Fatal("stream closed without an error")
			}
			if r.err != nil {
				return r.err
			}
		case <-deadline:
			rs.t.Fatal("stream did not fail within the test timeout")
		}
	}
}

func (rs *rawStream) ack(resp *discoveryv3.DeltaDiscoveryResponse) {
	rs.t.Helper()
	rs.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce})
}

// quiet proves that the server sent nothing since the last response read:
// it subscribes to a name that does not exist, and the very next response
// must answer only that name: its empty CLA (or its removal, for a type
// without a stand-in). The stream must have nothing in flight.
func (rs *rawStream) quiet() {
	rs.t.Helper()
	rs.probes++
	probe := fmt.Sprintf("probe-%d", rs.probes)
	rs.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{probe}})
	resp := rs.next()
	removal := len(resp.Resources) == 0 && len(resp.RemovedResources) == 1 && resp.RemovedResources[0] == probe
	standIn := len(resp.Resources) == 1 && len(resp.RemovedResources) == 0 && resp.Resources[0].Name == probe
	if !removal && !standIn {
		rs.t.Fatalf("expected nothing before the probe's answer, got %s", summary(resp))
	}
	rs.ack(resp)
	rs.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{probe}})
}

// emptyResource reports whether resp carries name as a CLA with no endpoints.
func emptyResource(t *testing.T, resp *discoveryv3.DeltaDiscoveryResponse, name string) bool {
	t.Helper()
	for _, r := range resp.Resources {
		if r.Name == name {
			cla := decodeCLA(t, r)
			return cla.ClusterName == name && len(cla.Endpoints) == 0
		}
	}
	return false
}

// summary renders a response as "name@version ... -removed".
func summary(resp *discoveryv3.DeltaDiscoveryResponse) string {
	s := ""
	for _, r := range resp.Resources {
		s += r.Name + "@" + r.Version + " "
	}
	for _, n := range resp.RemovedResources {
		s += "-" + n + " "
	}
	return s
}

// names returns the resource names of a response, in order.
func names(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	out := make([]string, 0, len(resp.Resources))
	for _, r := range resp.Resources {
		out = append(out, r.Name)
	}
	return out
}

func decodeCLA(t *testing.T, r *discoveryv3.Resource) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	c := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(r.GetResource().GetValue(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within the test timeout")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
