package watch

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

const waitTimeout = 30 * time.Second

func slice(ns, name, service string, port int32, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels:          map[string]string{},
			Annotations:     map[string]string{"noise": "dropped by the transform"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: service, UID: types.UID("uid-" + service)}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: proto.String("http"), Port: proto.Int32(port), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	if service != "" {
		s.Labels[discoveryv1.LabelServiceName] = service
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip, "10.99.99.99"}, Conditions: discoveryv1.EndpointConditions{Ready: proto.Bool(true)}})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// started runs a watcher until the test ends and waits for it to stop.
func started(t *testing.T, client kubernetes.Interface, cfg Config) (*Watcher, *xds.Store) {
	t.Helper()
	store := xds.NewStore()
	cfg.Client, cfg.Store = client, store
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w, store
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, waitTimeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func storedCLA(t *testing.T, store *xds.Store, name string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	r := store.Get(xds.EndpointType, name)
	if r == nil {
		return nil
	}
	c := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(r.Wire.GetResource().GetValue(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

func endpointCount(c *endpointv3.ClusterLoadAssignment) int {
	n := 0
	for _, g := range c.GetEndpoints() {
		n += len(g.GetLbEndpoints())
	}
	return n
}

func TestFirstListIsTranslatedBeforeSync(t *testing.T) {
	client := fake.NewClientset(
		slice("ns", "web-1", "web", 8080, "10.0.0.1", "10.0.0.2"),
		slice("ns", "web-2", "web", 8080, "10.0.0.3"),
		slice("ns", "orphan", "", 8080, "10.0.0.9"),
	)
	w, store := started(t, client, Config{})
	eventually(t, "sync", store.Synced)
	if !w.Synced() {
		t.Fatal("store synced before the watcher says so")
	}
	// Synced implies the first list is in the store: no waiting here.
	c := storedCLA(t, store, "ns/web/http")
	if c == nil || endpointCount(c) != 3 {
		t.Fatalf("CLA after sync: %v", c)
	}
	if got := store.Len(xds.EndpointType); got != 1 {
		t.Fatalf("%d CLAs, want 1 (the unlabelled slice belongs to no Service)", got)
	}
	if n := testutil.ToFloat64(w.metrics.UnlabelledSlices); n != 1 {
		t.Fatalf("unlabelled = %v", n)
	}
}

func TestDeletedServiceIsEmptiedThenRemoved(t *testing.T) {
	ctx := t.Context()
	client := fake.NewClientset(slice("ns", "web-1", "web", 8080, "10.0.0.1"))
	_, store := started(t, client, Config{DeletedGracePeriod: 300 * time.Millisecond})
	eventually(t, "sync", store.Synced)
	first := store.Get(xds.EndpointType, "ns/web/http").Version

	if err := client.DiscoveryV1().EndpointSlices("ns").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an empty CLA", func() bool {
		c := storedCLA(t, store, "ns/web/http")
		return c != nil && endpointCount(c) == 0
	})
	eventually(t, "removal after the grace period", func() bool { return store.Get(xds.EndpointType, "ns/web/http") == nil })

	// Re-created: the same content has the same version as before.
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(ctx, slice("ns", "web-1", "web", 8080, "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-created CLA", func() bool {
		r := store.Get(xds.EndpointType, "ns/web/http")
		return r != nil && r.Version == first
	})
}

func TestServiceRecreatedWithinGraceIsNeverRemoved(t *testing.T) {
	ctx := t.Context()
	client := fake.NewClientset(slice("ns", "web-1", "web", 8080, "10.0.0.1"))
	_, store := started(t, client, Config{DeletedGracePeriod: time.Hour})
	eventually(t, "sync", store.Synced)
	if err := client.DiscoveryV1().EndpointSlices("ns").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an empty CLA", func() bool { return endpointCount(storedCLA(t, store, "ns/web/http")) == 0 })
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(ctx, slice("ns", "web-2", "web", 8080, "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new endpoint", func() bool { return endpointCount(storedCLA(t, store, "ns/web/http")) == 1 })
}

// A slice whose kubernetes.io/service-name label changes, to another Service
// or to none (issue 10), leaves its old Service at once.
func TestRelabelledSliceLeavesItsOldService(t *testing.T) {
	tests := []struct {
		name    string
		service string // the slice's new label; "" removes it
		want    map[string]int
	}{
		{"to another Service", "b", map[string]int{"ns/a/http": 1, "ns/b/http": 1}},
		{"to none", "", map[string]int{"ns/a/http": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(
				slice("ns", "s-1", "a", 80, "10.0.0.1"),
				slice("ns", "s-2", "a", 80, "10.0.0.2"),
			)
			_, store := started(t, client, Config{})
			eventually(t, "sync", store.Synced)
			moved := slice("ns", "s-2", tt.service, 80, "10.0.0.2")
			if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(t.Context(), moved, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, fmt.Sprint("endpoints ", tt.want), func() bool {
				for name, n := range tt.want {
					if endpointCount(storedCLA(t, store, name)) != n {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestNamespacesRestrictTheWatch(t *testing.T) {
	client := fake.NewClientset(
		slice("one", "s", "web", 80, "10.0.0.1"),
		slice("two", "s", "web", 80, "10.0.0.2"),
	)
	_, store := started(t, client, Config{Namespaces: []string{"one"}})
	eventually(t, "sync", store.Synced)
	if storedCLA(t, store, "one/web/http") == nil || storedCLA(t, store, "two/web/http") != nil {
		t.Fatalf("store holds %v", store.Names(xds.EndpointType))
	}
}

func TestSlimSliceKeepsWhatTranslateReads(t *testing.T) {
	in := slice("ns", "web-1", "web", 8080, "10.0.0.1")
	in.Endpoints[0].Zone = ptr("z1")
	in.Endpoints[0].NodeName = ptr("node-1")
	in.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-abc", Namespace: "ns", UID: "u"}
	in.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}}
	in.Endpoints[0].Hostname = ptr("web-0")
	// A newer slice carrying the port name with another protocol: which one
	// wins depends on the creation times, which the transform must keep.
	in.CreationTimestamp = metav1.Unix(200, 0)
	older := slice("ns", "web-2", "web", 8080, "10.0.0.2", "10.0.0.3")
	older.Ports[0].Protocol = ptr(corev1.ProtocolUDP)
	older.CreationTimestamp = metav1.Unix(100, 0)
	out, err := slimSlice(in)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*discoveryv1.EndpointSlice)
	outOlder, err := slimSlice(older)
	if err != nil {
		t.Fatal(err)
	}
	if len(slim.ManagedFields) != 0 || len(slim.Annotations) != 0 || len(slim.OwnerReferences) != 0 {
		t.Fatalf("transform kept unread fields: %+v", slim)
	}
	if len(slim.Endpoints[0].Addresses) != 1 {
		t.Fatalf("addresses %v, want only the first", slim.Endpoints[0].Addresses)
	}
	// The pod's IPv6 endpoint is of a re-created pod of the same name: only
	// the UID keeps translate from pairing the two into one host.
	in6 := v6(slice("ns", "web-3", "web", 8080, "fd00::1"))
	in6.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-abc", Namespace: "ns", UID: "u2"}
	in6.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z2"}}}
	out6, err := slimSlice(in6)
	if err != nil {
		t.Fatal(err)
	}
	opts := translate.Options{}
	full := translate.Service("ns", "web", []*discoveryv1.EndpointSlice{in, older, in6}, opts)
	lean := translate.Service("ns", "web", []*discoveryv1.EndpointSlice{slim, outOlder.(*discoveryv1.EndpointSlice), out6.(*discoveryv1.EndpointSlice)}, opts)
	// Two endpoints: the newer slice's TCP one, and the re-created pod's IPv6 one on its own.
	if len(full.CLAs) != 1 || endpointCount(full.CLAs[0]) != 2 || !proto.Equal(full.CLAs[0], lean.CLAs[0]) {
		t.Fatalf("translation differs after the transform:\n%v\n%v", full.CLAs, lean.CLAs)
	}
	// The hints are kept: the variants translate builds from them are too.
	if !reflect.DeepEqual(slim.Endpoints[0].Hints, in.Endpoints[0].Hints) {
		t.Fatalf("hints %+v, want %+v", slim.Endpoints[0].Hints, in.Endpoints[0].Hints)
	}
	name := full.CLAs[0].ClusterName
	view := translate.View{Zone: "z1"}
	if full.Topologies[name] == nil || lean.Topologies[name].Key(view) != full.Topologies[name].Key(view) ||
		!proto.Equal(lean.Topologies[name].CLA(view), full.Topologies[name].CLA(view)) {
		t.Fatalf("variants differ after the transform: %v, %v", full.Topologies, lean.Topologies)
	}
}

// v6 turns a slice built by slice() into an IPv6 one.
func v6(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	s.AddressType = discoveryv1.AddressTypeIPv6
	for i := range s.Endpoints {
		s.Endpoints[i].Addresses = s.Endpoints[i].Addresses[:1]
	}
	return s
}

// TestIPFamilyOption: Config.Translate.Family reaches translation, and the
// slices it leaves out are counted.
func TestIPFamilyOption(t *testing.T) {
	pod := func(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
		s.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-0", Namespace: "ns", UID: "u0"}
		return s
	}
	for _, tt := range []struct {
		family      translate.IPFamily
		addr, extra string
		otherFamily bool // counted: each translation counts again
	}{
		{translate.IPFamilyDual, "10.0.0.1", "fd00::1", false},
		{translate.IPFamilyIPv4, "10.0.0.1", "", true},
		{translate.IPFamilyIPv6, "fd00::1", "", true},
	} {
		t.Run(tt.family.String(), func(t *testing.T) {
			client := fake.NewClientset(
				pod(slice("ns", "web-4", "web", 8080, "10.0.0.1")),
				pod(v6(slice("ns", "web-6", "web", 8080, "fd00::1"))),
			)
			w, store := started(t, client, Config{Translate: translate.Options{Family: tt.family}})
			eventually(t, "sync", store.Synced)
			c := storedCLA(t, store, "ns/web/http")
			if endpointCount(c) != 1 {
				t.Fatalf("CLA %v, want one endpoint", c)
			}
			e := c.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint()
			var extra string
			for _, a := range e.GetAdditionalAddresses() {
				extra += a.GetAddress().GetSocketAddress().GetAddress()
			}
			if got := e.GetAddress().GetSocketAddress().GetAddress(); got != tt.addr || extra != tt.extra {
				t.Errorf("endpoint %s + [%s], want %s + [%s]", got, extra, tt.addr, tt.extra)
			}
			if n := testutil.ToFloat64(w.metrics.Skipped.WithLabelValues("other_family_slice")); (n > 0) != tt.otherFamily {
				t.Errorf("other_family_slice = %v, want counted: %v", n, tt.otherFamily)
			}
		})
	}
}

func TestBadLabelSelectorIsAnError(t *testing.T) {
	if _, err := New(Config{Client: fake.NewClientset(), Store: xds.NewStore(), LabelSelector: "a in (("}); err == nil {
		t.Fatal("no error for a malformed selector")
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
