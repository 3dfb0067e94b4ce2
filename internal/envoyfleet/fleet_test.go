package envoyfleet

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	// deltaeds' own store and Delta server, as e2e runs them in the binary.
	store := xds.NewStore()
	store.RegisterType(xds.EndpointType, nil)
	if _, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: "web", Message: cla}}); err != nil {
		t.Fatal(err)
	}
	store.MarkSynced()
	ds := delta.NewServer(store, delta.Config{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ds.GRPCServerOptions()...)
	ds.Register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		if err := ds.Stop(context.Background()); err != nil {
			t.Error(err)
		}
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
