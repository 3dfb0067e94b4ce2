package watch

import (
	"fmt"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// A Service of cacheMinEndpoints endpoints or more is translated through a
// ServiceCache, and the store holds exactly the versions a whole
// translation gives, change after change; below the size, the cache is
// dropped.
func TestLargeServiceIsTranslatedThroughItsCache(t *testing.T) {
	const nSlices, perSlice = 12, 100
	var objs []*discoveryv1.EndpointSlice
	for s := range nSlices {
		ips := make([]string, perSlice)
		for i := range ips {
			ips[i] = fmt.Sprintf("10.1.%d.%d", s, i)
		}
		sl := slice("ns", fmt.Sprintf("web-%d", s), "web", 8080, ips...)
		sl.UID, sl.ResourceVersion = types.UID(sl.Name), "1"
		objs = append(objs, sl)
	}
	client := fake.NewClientset()
	for _, o := range objs {
		if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(t.Context(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w, store := started(t, client, Config{})
	<-w.SyncedCh()

	// What a whole translation of the same slices gives, as the store
	// would version it.
	wantVersion := func() string {
		slimmed := make([]*discoveryv1.EndpointSlice, len(objs))
		for i, o := range objs {
			s, _ := slimSlice(o)
			slimmed[i] = s.(*discoveryv1.EndpointSlice)
		}
		res := translate.Service("ns", "web", slimmed, translate.Options{})
		r, err := xds.NewResource(res.CLAs[0].ClusterName, xds.EndpointType, res.CLAs[0])
		if err != nil {
			t.Fatal(err)
		}
		return r.Version
	}
	name := translate.ClusterName("ns", "web", "http")
	converged := func(what string) {
		t.Helper()
		want := wantVersion()
		eventually(t, what, func() bool {
			r := store.Get(xds.EndpointType, name)
			return r != nil && r.Version == want
		})
	}
	cached := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.caches["ns/web"] != nil
	}
	converged("the first list")
	if !cached() {
		t.Fatal("a 1,200-endpoint Service has no cache")
	}

	update := func(i int, change func(*discoveryv1.EndpointSlice)) {
		t.Helper()
		s := objs[i].DeepCopy()
		change(s)
		rv, _ := strconv.Atoi(s.ResourceVersion)
		s.ResourceVersion = strconv.Itoa(rv + 1)
		if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		objs[i] = s
	}
	for step := range 5 {
		update(step%nSlices, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[step].Addresses = []string{fmt.Sprintf("10.2.0.%d", step)}
			s.Endpoints[step+1].Conditions.Ready = ptr(false)
		})
		converged(fmt.Sprintf("step %d", step))
	}
	if !cached() {
		t.Fatal("the cache was dropped")
	}

	// Shrunk below the size: translated whole, no cache kept.
	for i := 1; i < nSlices; i++ {
		if err := client.DiscoveryV1().EndpointSlices("ns").Delete(t.Context(), objs[i].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	objs = objs[:1]
	converged("the Service shrunk to one slice")
	eventually(t, "the cache dropped", func() bool { return !cached() })
}
