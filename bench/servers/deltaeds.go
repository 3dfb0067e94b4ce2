package servers

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/watch"
	"github.com/deltaeds/deltaeds/xds"
)

// deltaEDS is deltaeds' own store and Delta server, with default options.
// With zones > 0 every CLA it is given carries zone variants (zoneVariants).
// It takes slice commands itself (SliceServer): their Services are
// translated by translate.ServiceCache, as deltaeds' watch translates a
// large Service, and served with the encoding the translation assembled.
type deltaEDS struct {
	store *xds.Store
	srv   *delta.Server
	g     *grpc.Server
	zones int

	// services are the Services sent slice by slice, by CLA name; loaded
	// says Load ran, after which a slice is a change.
	services map[string]*slicedService
	loaded   bool
}

func newDeltaEDS(zones int) *deltaEDS {
	store := xds.NewStore()
	// As serve does (watch.New): absent names are served as empty CLAs.
	store.RegisterType(xds.EndpointType, func(name string) proto.Message { return translate.EmptyCLA(name) })
	srv := delta.NewServer(store, delta.Config{})
	g := grpc.NewServer(srv.GRPCServerOptions()...)
	srv.Register(g)
	return &deltaEDS{store: store, srv: srv, g: g, zones: zones, services: make(map[string]*slicedService)}
}

// update is the store update for c: with zones, its zone variants.
func (d *deltaEDS) update(c *endpointv3.ClusterLoadAssignment, at time.Time) xds.ResourceUpdate {
	u := xds.ResourceUpdate{Name: c.GetClusterName(), Message: c, ObservedAt: at}
	if d.zones > 0 {
		u.Variants = newZoneVariants(c, d.zones)
	}
	return u
}

// VariantBuilds is how many variants the store has built.
func (d *deltaEDS) VariantBuilds() uint64 {
	_, builds := d.store.VariantStats(xds.EndpointType)
	return builds
}

// zoneVariants gives a client in a zone that has endpoints of the CLA the
// CLA with its zone's endpoints at priority 0 and the others at 1: what
// translate.Topology builds for zone hints, where every endpoint is hinted
// for its own zone. Every locality keeps the change marker, so the fleet
// sees which change a variant delivers.
type zoneVariants struct {
	cla    *endpointv3.ClusterLoadAssignment
	zoneOf []string // zone of each endpoint of the CLA's one locality
	has    map[string]bool
}

func newZoneVariants(c *endpointv3.ClusterLoadAssignment, zones int) zoneVariants {
	z := zoneVariants{cla: c, has: make(map[string]bool, zones)}
	for _, l := range c.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			zone := ""
			if a, err := netip.ParseAddr(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()); err == nil {
				zone = control.ZoneOf(a, zones)
			}
			z.zoneOf = append(z.zoneOf, zone)
			z.has[zone] = true
		}
	}
	return z
}

func (z zoneVariants) Key(v xds.View) string {
	if v.Zone == "" || !z.has[v.Zone] {
		return ""
	}
	return "zone:" + v.Zone
}

func (z zoneVariants) Build(v xds.View) proto.Message {
	var local, rest []*endpointv3.LbEndpoint
	var marker *corev3.Metadata
	i := 0
	for _, l := range z.cla.GetEndpoints() {
		marker = l.GetMetadata()
		for _, e := range l.GetLbEndpoints() {
			if z.zoneOf[i] == v.Zone {
				local = append(local, e)
			} else {
				rest = append(rest, e)
			}
			i++
		}
	}
	out := &endpointv3.ClusterLoadAssignment{ClusterName: z.cla.GetClusterName(),
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: local, Metadata: marker}}}
	if len(rest) > 0 {
		out.Endpoints = append(out.Endpoints, &endpointv3.LocalityLbEndpoints{Priority: 1, LbEndpoints: rest, Metadata: marker})
	}
	return out
}

func (d *deltaEDS) Load(clas []*endpointv3.ClusterLoadAssignment) error {
	now := time.Now()
	updates := make([]xds.ResourceUpdate, len(clas))
	for i, c := range clas {
		updates[i] = d.update(c, now)
	}
	for _, ss := range d.services {
		updates = append(updates, d.translated(ss, now)...)
	}
	d.loaded = true
	if _, err := d.store.Apply(xds.EndpointType, updates); err != nil {
		return fmt.Errorf("deltaeds: load: %w", err)
	}
	d.store.MarkSynced()
	return nil
}

func (d *deltaEDS) Set(c *endpointv3.ClusterLoadAssignment) error {
	_, err := d.store.Apply(xds.EndpointType, []xds.ResourceUpdate{d.update(c, time.Now())})
	if err != nil {
		return fmt.Errorf("deltaeds: apply %s: %w", c.GetClusterName(), err)
	}
	return nil
}

// SetSlice sets one EndpointSlice of a Service (see SliceServer). A slice
// it rejects changes nothing.
func (d *deltaEDS) SetSlice(s control.Slice) error {
	if d.zones > 0 {
		return fmt.Errorf("deltaeds: slice %s: zone variants of translated Services are not modelled", s.Name)
	}
	ss := d.services[s.Name]
	if ss == nil {
		var err error
		if ss, err = newSlicedService(s.Name); err != nil {
			return fmt.Errorf("deltaeds: %w", err)
		}
	}
	if err := ss.set(s); err != nil {
		return fmt.Errorf("deltaeds: %w", err)
	}
	d.services[s.Name] = ss // a Service is known once a slice of it is
	if !d.loaded {
		return nil
	}
	if _, err := d.store.Apply(xds.EndpointType, d.translated(ss, time.Now())); err != nil {
		return fmt.Errorf("deltaeds: apply %s: %w", s.Name, err)
	}
	return nil
}

// translated is the store update of ss's translation, built by watch's own
// ResourceUpdates, and an empty CLA for its name when no slice is left
// (Envoy keeps its hosts on a removal).
func (d *deltaEDS) translated(ss *slicedService, at time.Time) []xds.ResourceUpdate {
	out := watch.ResourceUpdates(ss.translate(), at)
	if !slices.ContainsFunc(out, func(u xds.ResourceUpdate) bool { return u.Name == ss.name }) {
		out = append(out, xds.ResourceUpdate{Name: ss.name, Message: translate.EmptyCLA(ss.name), ObservedAt: at})
	}
	return out
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
