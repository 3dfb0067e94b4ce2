package envoyfleet

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/deltaeds/deltaeds/envoysim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// staticADS answers every subscription at once with the resources it holds
// and ignores ACKs.
type staticADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	res map[string]*discoveryv3.Resource
}

func (s *staticADS) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	for nonce := 1; ; nonce++ {
		req, err := st.Recv()
		if err != nil {
			return nil // the client went away
		}
		var rs []*discoveryv3.Resource
		for _, n := range req.GetResourceNamesSubscribe() {
			if r, ok := s.res[n]; ok {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryResponse{
			TypeUrl: envoysim.TypeURLClusterLoadAssignment, Nonce: strconv.Itoa(nonce), Resources: rs,
		}); err != nil {
			return err
		}
	}
}

// TestClientsShareDecodedResources checks that a fleet's clients hold one
// decoded copy of a resource they all received.
func TestClientsShareDecodedResources(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "web", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80},
			}}},
		}}}},
	}}}
	body, err := anypb.New(cla)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, &staticADS{res: map[string]*discoveryv3.Resource{
		"web": {Name: "web", Version: "1", Resource: body},
	}})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := Start(ctx, Options{Size: 3, Target: lis.Addr().String(), Subscribe: func(int) []string { return []string{"web"} }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WaitAll(ctx, func(s envoysim.State) bool { _, ok := s.Route("web"); return ok }); err != nil {
		t.Fatal(err)
	}
	first, _ := f.Clients[0].Route("web")
	for i, c := range f.Clients {
		if r, _ := c.Route("web"); r.CLA != first.CLA || r.CLA.GetClusterName() != "web" {
			t.Errorf("client %d routes with %p (%v), want the shared %p", i, r.CLA, r.CLA, first.CLA)
		}
	}
	if n := f.DecodeCache.Len(); n != 1 {
		t.Errorf("the fleet's cache holds %d bodies, want 1", n)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}
