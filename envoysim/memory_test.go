package envoysim

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// staticADS answers every subscription at once with the resources it was
// built with, and ignores ACKs: the least a server can do, so that what a
// benchmark measures is the clients. Its resources are built once and shared
// by every stream, so its memory does not grow with subscriptions.
type staticADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	res map[string]*discoveryv3.Resource
}

func (s *staticADS) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	nonce := 0
	for {
		req, err := st.Recv()
		if err != nil {
			return nil // the client went away: the stream is done either way
		}
		names := req.GetResourceNamesSubscribe()
		if len(names) == 0 {
			continue
		}
		rs := make([]*discoveryv3.Resource, 0, len(names))
		for _, n := range names {
			if r, ok := s.res[n]; ok {
				rs = append(rs, r)
			}
		}
		nonce++
		if err := st.Send(&discoveryv3.DeltaDiscoveryResponse{
			TypeUrl: TypeURLClusterLoadAssignment, Nonce: strconv.Itoa(nonce), Resources: rs,
		}); err != nil {
			return err
		}
	}
}

// benchCLA is shaped like the benchmark's CLAs (bench/control.BuildCLA,
// which this package may not import): one locality of endpoints with a
// marker in its metadata.
func benchCLA(name string, id, endpoints int) *endpointv3.ClusterLoadAssignment {
	lbs := make([]*endpointv3.LbEndpoint, endpoints)
	for i := range lbs {
		lbs[i] = &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Protocol:      corev3.SocketAddress_TCP,
					Address:       fmt.Sprintf("10.%d.%d.%d", id/256%256, id%256, i),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
			}},
		}
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: lbs,
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"bench": {Fields: map[string]*structpb.Value{"change": structpb.NewNumberValue(float64(id))}},
			}},
		}},
	}
}

// heapInUse is the live heap after collecting everything collectable.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC() // a second cycle runs the cleanups and finalizers the first one queued
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkFleetMemory reports what a fleet of clients keeps per
// subscription once synced, the figure that bounds the size of the fleets
// bench/ can run (issue 14). It reports, it does not assert. Run it with
// -benchtime=1x: an iteration is a whole fleet.
//
// B/sub is the heap growth from before the clients started to when all of
// them route with all their names, over the subscriptions; it includes each
// client's fixed cost (connection, stream, goroutines). marginal-B/sub
// cancels that: the growth from every client holding a fifth of its names to
// holding all of them, over the subscriptions added.
//
// cache=off is every client decoding for itself; cache=on shares one
// DecodeCache, as internal/envoyfleet does.
func BenchmarkFleetMemory(b *testing.B) {
	b.Run("cache=off", func(b *testing.B) { benchmarkFleetMemory(b, false) })
	b.Run("cache=on", func(b *testing.B) { benchmarkFleetMemory(b, true) })
}

func benchmarkFleetMemory(b *testing.B, share bool) {
	const (
		clas      = 2000
		clients   = 100
		perClient = 500
		endpoints = 10
	)
	srv := &staticADS{res: make(map[string]*discoveryv3.Resource, clas)}
	names := make([]string, clas)
	for i := range names {
		names[i] = fmt.Sprintf("bench/cla-%04d", i)
		a, err := anypb.New(benchCLA(names[i], i, endpoints))
		if err != nil {
			b.Fatal(err)
		}
		srv.res[names[i]] = &discoveryv3.Resource{Name: names[i], Version: fmt.Sprintf("%016x", i*7919), Resource: a}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	defer func() {
		gs.Stop()
		<-served
	}()

	// Client i wants perClient consecutive names from its own offset, so
	// each CLA has clients*perClient/clas subscribers, as in bench's fleets.
	wants := func(i, from, to int) []string {
		out := make([]string, 0, to-from)
		for k := from; k < to; k++ {
			out = append(out, names[(i*clas/clients+k)%clas])
		}
		return out
	}
	waitAll := func(cs []*Client, n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, c := range cs {
			if err := c.WaitFor(ctx, func(s State) bool { return s.RouteLen() >= n }); err != nil {
				b.Fatal(err)
			}
		}
	}

	for range b.N {
		base := heapInUse()
		var dc *DecodeCache
		if share {
			dc = new(DecodeCache)
		}
		cs := make([]*Client, clients)
		for i := range cs {
			cs[i] = New(Config{Target: lis.Addr().String(), NodeID: fmt.Sprintf("envoy-%04d", i), Cluster: "bench", DecodeCache: dc})
			cs[i].Subscribe(wants(i, 0, perClient/5)...)
			if err := cs[i].Start(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		waitAll(cs, perClient/5)
		fifth := heapInUse()
		for i, c := range cs {
			c.Subscribe(wants(i, perClient/5, perClient)...)
		}
		waitAll(cs, perClient)
		full := heapInUse()
		for _, c := range cs {
			if v := c.Violations(); len(v) > 0 {
				b.Fatalf("violations: %v", v)
			}
		}
		b.ReportMetric(float64(full-base)/(clients*perClient), "B/sub")
		b.ReportMetric(float64(full-fifth)/(clients*(perClient-perClient/5)), "marginal-B/sub")
		if dc != nil {
			b.ReportMetric(float64(dc.Len()), "cached")
		}
		for _, c := range cs {
			_ = c.Close()
		}
		runtime.KeepAlive(cs)
	}
}
