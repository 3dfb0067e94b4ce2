package servers

import (
	"context"
	"fmt"
	"net"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// deltaEDS is deltaeds' own store and Delta server, with default options.
type deltaEDS struct {
	store *xds.Store
	srv   *delta.Server
	g     *grpc.Server
}

func newDeltaEDS() *deltaEDS {
	store := xds.NewStore()
	// As serve does (watch.New): absent names are served as empty CLAs.
	store.RegisterType(xds.EndpointType, func(name string) proto.Message { return translate.EmptyCLA(name) })
	srv := delta.NewServer(store, delta.Config{})
	g := grpc.NewServer(srv.GRPCServerOptions()...)
	srv.Register(g)
	return &deltaEDS{store: store, srv: srv, g: g}
}

func (d *deltaEDS) Load(clas []*endpointv3.ClusterLoadAssignment) error {
	now := time.Now()
	updates := make([]xds.ResourceUpdate, len(clas))
	for i, c := range clas {
		updates[i] = xds.ResourceUpdate{Name: c.GetClusterName(), Message: c, ObservedAt: now}
	}
	if _, err := d.store.Apply(xds.EndpointType, updates); err != nil {
		return fmt.Errorf("deltaeds: load: %w", err)
	}
	d.store.MarkSynced()
	return nil
}

func (d *deltaEDS) Set(c *endpointv3.ClusterLoadAssignment) error {
	_, err := d.store.Apply(xds.EndpointType, []xds.ResourceUpdate{{Name: c.GetClusterName(), Message: c, ObservedAt: time.Now()}})
	if err != nil {
		return fmt.Errorf("deltaeds: apply %s: %w", c.GetClusterName(), err)
	}
	return nil
}

func (d *deltaEDS) Serve(lis net.Listener) error {
	go func() { _ = d.g.Serve(lis) }()
	return nil
}

func (d *deltaEDS) Stop(ctx context.Context) error {
	err := d.srv.Stop(ctx)
	d.g.Stop()
	if err != nil {
		return fmt.Errorf("deltaeds: stop: %w", err)
	}
	return nil
}
