package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 12c: deltaeds' EndpointSlice watch expires. etcd is compacted past the last revision
// deltaeds saw while kube-apiserver is down, so when it is back the watch from that revision is
// answered "410 Gone" and the informer relists every slice. The relist is content deltaeds
// already serves: no client is sent anything for it. A change made afterwards reaches every
// client, and is the only thing each receives after the relist.
func TestWatchExpiredRelist(t *testing.T) {
	const ns = "s12-expired"
	const services = 5
	e := scenario(t, ns)
	slices := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	var names []string
	for i := range services {
		svc := fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("10.122.0.%d", i+1)
		if _, err := slices.Create(t.Context(), manualSlice(ns, svc, svc, discoveryv1.AddressTypeIPv4, ip), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, translate.ClusterName(ns, svc, httpPort.Name))
	}
	// One namespace: the update events counted below are this scenario's slices only.
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s12-expired", ExtraArgs: []string{"--namespace", ns}})
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 3, Target: p.XDSAddress(), NodePrefix: "s12-expired", OnApply: rec.onApply})
	f.Subscribe(names...)
	for i, name := range names {
		waitAll(t, "the first endpoints", f, holds(name, []string{fmt.Sprintf("10.122.0.%d", i+1)}, nil))
	}
	mark := rec.mark()
	before := metrics(t, p).Value("deltaeds_endpointslice_events_total", "kind", "update")

	// Move etcd past the last revision deltaeds saw, with a write it does not watch.
	if _, err := e.cp.Client().CoreV1().ConfigMaps(ns).Create(t.Context(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bump"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, start := stopAPIServer(t, e)
	rev := etcdRevision(t, e)
	etcdCompact(t, e, rev)
	answering := start()

	// The relist: every slice again, as updates of objects the informer holds.
	var relisted time.Time
	if err := harness.Eventually(waitCtx(t), func() error {
		if got := metrics(t, p).Value("deltaeds_endpointslice_events_total", "kind", "update") - before; got < services {
			return fmt.Errorf("%v update events since the compaction, want at least %d (a relist)", got, services)
		}
		relisted = time.Now()
		return nil
	}); err != nil {
		t.Fatalf("deltaeds did not relist after its watch expired: %v", err)
	}
	t.Logf("etcd compacted at revision %d; deltaeds relisted %s after kube-apiserver answered /readyz",
		rev, relisted.Sub(answering).Round(10*time.Millisecond))

	// A change after the relist: each client's next update must be this one. Anything the
	// relist sent would have arrived first, on the same stream.
	cur, err := slices.Get(t.Context(), "svc-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Endpoints = manualSlice(ns, "svc-0", "svc-0", discoveryv1.AddressTypeIPv4, "10.122.1.1").Endpoints
	if _, err := slices.Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "the change after the relist", f, holds(names[0], []string{"10.122.1.1"}, nil))
	got := rec.since(mark, -1, "")
	for _, ev := range got {
		if ev.name != names[0] {
			t.Errorf("client %d was sent %s@%s after the relist; it held it already", ev.client, ev.name, short(ev.version))
		}
	}
	if len(got) != len(f.Clients) {
		t.Errorf("%d updates after the relist, want %d (the change, once per client)", len(got), len(f.Clients))
	}
	t.Logf("after the relist the %d clients were sent %d updates: the change made after it", len(f.Clients), len(got))
	settleControllers(t, e, ns)
}

// etcdRevision returns etcd's current revision, through its JSON gateway.
func etcdRevision(t *testing.T, e *environment) int64 {
	t.Helper()
	var out struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	etcdPost(t, e, "/v3/kv/range", map[string]any{"key": []byte("/")}, &out)
	rev, err := strconv.ParseInt(out.Header.Revision, 10, 64)
	if err != nil {
		t.Fatalf("etcd revision %q: %v", out.Header.Revision, err)
	}
	return rev
}

// etcdCompact compacts etcd's history up to rev: a watch from an older revision is answered
// "410 Gone" from then on.
func etcdCompact(t *testing.T, e *environment, rev int64) {
	t.Helper()
	etcdPost(t, e, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}, nil)
}

func etcdPost(t *testing.T, e *environment, path string, body any, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(waitCtx(t), http.MethodPost, e.cp.EtcdURL()+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("etcd %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("etcd %s: %s %s %v", path, resp.Status, data, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("etcd %s: %v in %s", path, err, data)
		}
	}
}
