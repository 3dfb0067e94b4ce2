package xds_test

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/xds"
)

// cla is a ClusterLoadAssignment with one endpoint per address.
func cla(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: a, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// show prints a batch: each resource with its endpoint count, each removal.
func show(b xds.Batch) {
	for _, r := range b.Resources {
		var c endpointv3.ClusterLoadAssignment
		if err := r.Wire.Resource.UnmarshalTo(&c); err != nil {
			panic(err)
		}
		n := 0
		for _, l := range c.Endpoints {
			n += len(l.LbEndpoints)
		}
		fmt.Printf("  %s: %d endpoints\n", r.Name, n)
	}
	for _, n := range b.Removed {
		fmt.Printf("  %s: removed\n", n)
	}
}

// The writer registers the type, applies a first full state and marks the
// store synced; a reader subscribes, waits for its notify channel and takes
// batches with Next.
func Example() {
	store := xds.NewStore()
	// A name subscribed to that has no resource is served as an empty CLA.
	store.RegisterType(xds.EndpointType, func(name string) proto.Message {
		return &endpointv3.ClusterLoadAssignment{ClusterName: name}
	})

	// One stream's subscription to CLAs.
	notify := make(chan struct{}, 1)
	sub := store.Subscribe(xds.EndpointType, notify, 1000)
	defer sub.Close()
	if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"shop/web/http", "shop/api/http"}}); err != nil {
		panic(err)
	}

	// The writer's first full state.
	if _, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{
		{Name: "shop/web/http", Message: cla("shop/web/http", "10.0.0.1", "10.0.0.2")},
		{Name: "shop/db/tcp", Message: cla("shop/db/tcp", "10.0.1.1")},
	}); err != nil {
		panic(err)
	}
	fmt.Println("before MarkSynced, empty:", sub.Next(0).Empty())
	store.MarkSynced()

	<-notify
	fmt.Println("first batch:")
	show(sub.Next(0))

	// A change and a deletion: the deleted name is served empty.
	res, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{
		{Name: "shop/web/http", Message: cla("shop/web/http", "10.0.0.1", "10.0.0.2", "10.0.0.3")},
		{Name: "shop/db/tcp"},
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("applied: %d set, %d deleted, %d subscription woken\n", res.Set, res.Deleted, res.Notified)
	<-notify
	fmt.Println("second batch:")
	show(sub.Next(0))
	fmt.Println("then empty:", sub.Next(0).Empty())

	// Output:
	// before MarkSynced, empty: true
	// first batch:
	//   shop/api/http: 0 endpoints
	//   shop/web/http: 2 endpoints
	// applied: 1 set, 1 deleted, 1 subscription woken
	// second batch:
	//   shop/web/http: 3 endpoints
	// then empty: true
}

// zonePreference is a Variants: a client in a zone that has endpoints gets
// a CLA of that zone's endpoints only (a stand-in for what translate.Topology
// builds from EndpointSlice hints); any other client the plain CLA.
type zonePreference struct {
	name   string
	byZone map[string][]string // zone -> addresses
}

func (z zonePreference) Key(v xds.View) string {
	if len(z.byZone[v.Zone]) == 0 {
		return ""
	}
	return "zone:" + v.Zone
}

func (z zonePreference) Build(v xds.View) proto.Message {
	return cla(z.name, z.byZone[v.Zone]...)
}

// A resource updated with Variants is served per view: each subscription
// opened with SubscribeView gets the variant its view's key names, built
// once per key however many subscriptions share it; the zero View (Subscribe)
// gets the plain resource.
func Example_variants() {
	store := xds.NewStore()
	store.RegisterType(xds.EndpointType, nil)
	store.MarkSynced()

	open := func(v xds.View) *xds.Subscription {
		sub := store.SubscribeView(xds.EndpointType, v, make(chan struct{}, 1), 0)
		if err := sub.Update(xds.SubscriptionChange{Subscribe: []string{"shop/web/http"}}); err != nil {
			panic(err)
		}
		return sub
	}
	a1, a2 := open(xds.View{Zone: "zone-a", Node: "node-1"}), open(xds.View{Zone: "zone-a", Node: "node-2"})
	b, plain := open(xds.View{Zone: "zone-b"}), open(xds.View{})
	for _, sub := range []*xds.Subscription{a1, a2, b, plain} {
		defer sub.Close()
	}

	web := zonePreference{name: "shop/web/http", byZone: map[string][]string{
		"zone-a": {"10.0.0.1", "10.0.0.2"},
		"zone-b": {"10.0.1.1"},
	}}
	res, err := store.Apply(xds.EndpointType, []xds.ResourceUpdate{{
		Name:     "shop/web/http",
		Message:  cla("shop/web/http", "10.0.0.1", "10.0.0.2", "10.0.1.1"),
		Variants: web,
	}})
	if err != nil {
		panic(err)
	}
	fmt.Println("variants built:", res.VariantsBuilt)
	for _, s := range []struct {
		name string
		sub  *xds.Subscription
	}{{"zone-a node-1", a1}, {"zone-a node-2", a2}, {"zone-b", b}, {"no view", plain}} {
		fmt.Println(s.name + ":")
		show(s.sub.Next(0))
	}
	for _, v := range store.Variants(xds.EndpointType, "shop/web/http") {
		fmt.Printf("variant %s: %d views, %d subscriptions\n", v.Key, v.Views, v.Subscriptions)
	}

	// Output:
	// variants built: 2
	// zone-a node-1:
	//   shop/web/http: 2 endpoints
	// zone-a node-2:
	//   shop/web/http: 2 endpoints
	// zone-b:
	//   shop/web/http: 1 endpoints
	// no view:
	//   shop/web/http: 3 endpoints
	// variant zone:zone-a: 2 views, 2 subscriptions
	// variant zone:zone-b: 1 views, 1 subscriptions
}
