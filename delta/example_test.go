package delta_test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/xds"
)

// A store fed and synced, a Server on a grpc.Server, one client stream
// subscribing to a CLA that exists and one that does not, and the shutdown:
// Stop, then GracefulStop.
func Example() {
	store := xds.NewStore()
	store.RegisterType(xds.EndpointType, func(name string) proto.Message {
		return &endpointv3.ClusterLoadAssignment{ClusterName: name}
	})
	web := &endpointv3.ClusterLoadAssignment{ClusterName: "shop/web/http", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}}}}},
	}}}
	if _, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "shop/web/http", Message: web}}); err != nil {
		panic(err)
	}
	store.MarkSynced()

	// 1. The server, its metrics in the registry /metrics serves.
	srv := delta.NewServer(store, delta.Config{Metrics: delta.NewMetrics(prometheus.NewRegistry())})
	// 2. Its gRPC options first, then the caller's own.
	g := grpc.NewServer(append(srv.GRPCServerOptions(), grpc.MaxConcurrentStreams(100))...)
	// 3. Register, then serve.
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()

	// A client: one Delta ADS stream.
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		panic(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "envoy-1"},
		TypeUrl:                xds.EndpointType,
		ResourceNamesSubscribe: []string{"shop/web/http", "shop/typo/http"},
	}); err != nil {
		panic(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		panic(err)
	}
	var got []string
	for _, r := range resp.Resources {
		var c endpointv3.ClusterLoadAssignment
		if err := r.Resource.UnmarshalTo(&c); err != nil {
			panic(err)
		}
		n := 0
		for _, l := range c.Endpoints {
			n += len(l.LbEndpoints)
		}
		got = append(got, fmt.Sprintf("%s: %d endpoints", r.Name, n))
	}
	sort.Strings(got)
	for _, line := range got {
		fmt.Println(line)
	}
	// ACK it.
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: resp.Nonce}); err != nil {
		panic(err)
	}

	// 4. Shut down: Stop ends the streams, then GracefulStop can return.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Stop(sctx); err != nil {
		panic(err)
	}
	_, err = stream.Recv()
	fmt.Println("the client's stream ends with", status.Code(err))
	g.GracefulStop()
	fmt.Println("Serve returned:", <-served)

	// Output:
	// shop/typo/http: 0 endpoints
	// shop/web/http: 1 endpoints
	// the client's stream ends with Unavailable
	// Serve returned: <nil>
}
