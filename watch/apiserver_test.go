package watch

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// TestAgainstRealAPIServer runs the watcher against a real kube-apiserver
// and etcd: creates, updates and deletes, a Service spread over many slices,
// and an API-server outage during which the store keeps its state and after
// which changes arrive again.
func TestAgainstRealAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	slices := client.DiscoveryV1().EndpointSlices("shop")

	// Present before the watcher starts: part of the first list.
	if _, err := slices.Create(ctx, slice("shop", "cart-1", "cart", 8080, "10.1.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, store := started(t, client, Config{DeletedGracePeriod: time.Hour, ProbeInterval: 100 * time.Millisecond})
	eventually(t, "sync", store.Synced)
	if c := storedCLA(t, store, "shop/cart/http"); endpointCount(c) != 1 {
		t.Fatalf("first list not in the store at sync: %v", c)
	}

	t.Run("update", func(t *testing.T) {
		s := slice("shop", "cart-1", "cart", 8080, "10.1.0.1", "10.1.0.2")
		cur, err := slices.Get(ctx, "cart-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.ResourceVersion = cur.ResourceVersion
		if _, err := slices.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "two endpoints", func() bool { return endpointCount(storedCLA(t, store, "shop/cart/http")) == 2 })
	})

	t.Run("a Service with many slices", func(t *testing.T) {
		const nSlices, perSlice = 30, 100
		for i := 0; i < nSlices; i++ {
			var ips []string
			for j := 0; j < perSlice; j++ {
				ips = append(ips, fmt.Sprintf("10.2.%d.%d", i, j+1))
			}
			if _, err := slices.Create(ctx, slice("shop", fmt.Sprintf("search-%02d", i), "search", 9090, ips...), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "every endpoint of every slice", func() bool {
			return endpointCount(storedCLA(t, store, "shop/search/http")) == nSlices*perSlice
		})
	})

	t.Run("a slice that loses its Service label leaves the Service", func(t *testing.T) {
		if _, err := slices.Create(ctx, slice("shop", "pay-1", "pay", 8080, "10.3.0.1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := slices.Create(ctx, slice("shop", "pay-2", "pay", 8080, "10.3.0.2"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "two pay endpoints", func() bool { return endpointCount(storedCLA(t, store, "shop/pay/http")) == 2 })
		cur, err := slices.Get(ctx, "pay-2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(cur.Labels, "kubernetes.io/service-name")
		if _, err := slices.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "one pay endpoint", func() bool { return endpointCount(storedCLA(t, store, "shop/pay/http")) == 1 })
	})

	t.Run("service-proxy-name: another proxy's Services are left alone; a named one serves only its own", func(t *testing.T) {
		mine := slice("shop", "mesh-1", "mesh", 8080, "10.4.0.1")
		mine.Labels[translate.ServiceProxyNameLabel] = "deltaeds"
		theirs := slice("shop", "other-1", "other", 8080, "10.4.0.2")
		theirs.Labels[translate.ServiceProxyNameLabel] = "another-proxy"
		for _, s := range []*discoveryv1.EndpointSlice{mine, theirs} {
			if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		_, named := started(t, client, Config{ServiceProxyName: "deltaeds", ProbeInterval: 100 * time.Millisecond})
		eventually(t, "the named watcher's sync", named.Synced)
		eventually(t, "the Service labelled for deltaeds, on the named watcher", func() bool {
			return endpointCount(storedCLA(t, named, "shop/mesh/http")) == 1
		})
		// The default watcher (started before these slices) must never publish either, and
		// the named one nothing unlabelled: both have seen a later change by now.
		if _, err := slices.Create(ctx, slice("shop", "late-1", "late", 8080, "10.4.0.3"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a later unlabelled Service, on the default watcher", func() bool {
			return endpointCount(storedCLA(t, store, "shop/late/http")) == 1
		})
		for _, name := range []string{"shop/mesh/http", "shop/other/http"} {
			if r := store.Get(xds.EndpointType, name); r != nil {
				t.Errorf("the default watcher publishes %s, labelled for another proxy", name)
			}
		}
		for _, name := range []string{"shop/other/http", "shop/cart/http", "shop/late/http"} {
			if r := named.Get(xds.EndpointType, name); r != nil {
				t.Errorf("the watcher named deltaeds publishes %s", name)
			}
		}
	})

	t.Run("delete publishes an empty CLA", func(t *testing.T) {
		if err := slices.Delete(ctx, "cart-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "empty cart CLA", func() bool {
			c := storedCLA(t, store, "shop/cart/http")
			return c != nil && endpointCount(c) == 0
		})
	})

	t.Run("API-server outage", func(t *testing.T) {
		before := store.Get(xds.EndpointType, "shop/search/http")
		if err := cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		// The watcher's reflector notices and retries; the store is
		// untouched and stays synced meanwhile.
		eventually(t, "the outage to be noticed", func() bool { _, err := w.APIServerHealth(); return err != nil })
		if !store.Synced() || store.Get(xds.EndpointType, "shop/search/http") != before {
			t.Fatal("the store changed during the outage")
		}
		if err := cp.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted := kubernetes.NewForConfigOrDie(rest.CopyConfig(cp.RESTConfig()))
		var err error
		if perr := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
			_, err = restarted.DiscoveryV1().EndpointSlices("shop").Create(ctx,
				slice("shop", "cart-2", "cart", 8080, "10.1.0.9"), metav1.CreateOptions{})
			return err == nil, nil
		}); perr != nil {
			t.Fatalf("creating a slice after the restart: %v (last: %v)", perr, err)
		}
		eventually(t, "the API server to be seen healthy", func() bool { _, err := w.APIServerHealth(); return err == nil })
		eventually(t, "a change made after the restart", func() bool {
			return endpointCount(storedCLA(t, store, "shop/cart/http")) == 1
		})
		if store.Get(xds.EndpointType, "shop/search/http").Version != before.Version {
			t.Fatal("an unchanged CLA got a new version across the outage")
		}
	})
}
