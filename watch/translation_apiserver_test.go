package watch

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
)

// TestTranslationRulesAgainstRealAPIServer checks the translation rules
// that depend on what the API server stores, through the informer and its
// transform: defaulted port names and protocols, endpoint hostnames, and a
// port name carried with two protocols settled by creation time.
func TestTranslationRulesAgainstRealAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	slices := client.DiscoveryV1().EndpointSlices("shop")
	_, store := started(t, client, Config{DeletedGracePeriod: time.Hour})
	eventually(t, "sync", store.Synced)

	t.Run("a port without name or protocol is defaulted by the API server: the unnamed TCP port", func(t *testing.T) {
		s := slice("shop", "bare-1", "bare", 80, "10.1.0.1")
		s.Ports[0].Name, s.Ports[0].Protocol = nil, nil
		if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "shop/bare", func() bool {
			c := storedCLA(t, store, "shop/bare")
			return endpointCount(c) == 1 && c.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetProtocol() == corev3.SocketAddress_TCP
		})
	})

	t.Run("hostname: the endpoint's own", func(t *testing.T) {
		s := slice("shop", "db-1", "db", 5432, "10.2.0.1", "10.2.0.2")
		s.Endpoints[0].Hostname = ptr("db-0")
		s.Endpoints[1].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "db-1"}
		if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "hostnames", func() bool {
			got := map[string]string{}
			for _, g := range storedCLA(t, store, "shop/db/http").GetEndpoints() {
				for _, lb := range g.GetLbEndpoints() {
					got[lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = lb.GetEndpoint().GetHostname()
				}
			}
			return len(got) == 2 && got["10.2.0.1"] == "db-0" && got["10.2.0.2"] == ""
		})
	})

	t.Run("a port name with two protocols: the newer slice's", func(t *testing.T) {
		old := slice("shop", "dns-old", "dns", 53, "10.3.0.1", "10.3.0.2", "10.3.0.3")
		if _, err := slices.Create(ctx, old, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Creation timestamps have one-second resolution; the newer slice
		// must be created in a later second to be newer.
		time.Sleep(1100 * time.Millisecond)
		updated := slice("shop", "dns-new", "dns", 53, "10.3.0.9")
		updated.Ports[0].Protocol = ptr(corev1.ProtocolUDP)
		if _, err := slices.Create(ctx, updated, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The older slice has more endpoints: only its creation time can
		// make the newer one win.
		eventually(t, "UDP only", func() bool {
			c := storedCLA(t, store, "shop/dns/http")
			return endpointCount(c) == 1 && c.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetProtocol() == corev3.SocketAddress_UDP
		})
	})
}
