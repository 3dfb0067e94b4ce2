package watch_test

import (
	"context"
	"fmt"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/deltaeds/deltaeds/watch"
	"github.com/deltaeds/deltaeds/xds"
)

// A Watcher fed by a fake clientset holding one EndpointSlice of Service
// shop/web: Run lists it, writes the Service's CLA to the store and marks the
// store synced; cancelling the context stops it.
func Example() {
	portName, port, protocol, ready := "http", int32(8080), corev1.ProtocolTCP, true
	client := fake.NewClientset(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-abc12",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &protocol}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
		},
	})
	store := xds.NewStore()

	// 1. New: the client, the store, metrics in the served registry.
	w, err := watch.New(watch.Config{Client: client, Store: store, Metrics: watch.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		panic(err)
	}
	// 2. Run, in its own goroutine, until the context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	// 3. Wait for the first list to be in the store.
	select {
	case <-w.SyncedCh():
	case err := <-done:
		panic(fmt.Sprintf("Run returned before the first sync: %v", err))
	case <-time.After(10 * time.Second):
		panic("no sync within 10s")
	}
	fmt.Println("store synced:", store.Synced())
	for _, r := range store.List(xds.EndpointType) {
		var c endpointv3.ClusterLoadAssignment
		if err := r.Wire.Resource.UnmarshalTo(&c); err != nil {
			panic(err)
		}
		fmt.Printf("%s: %d endpoints\n", r.Name, len(c.Endpoints[0].LbEndpoints))
	}

	cancel()
	fmt.Println("Run returned:", <-done)

	// Output:
	// store synced: true
	// shop/web/http: 2 endpoints
	// Run returned: <nil>
}
