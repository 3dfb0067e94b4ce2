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
