package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 1: a Service with pods; every client gets the right CLA (priorities, zones, ports),
// then follows pods turning unready, ready, terminating and gone.
func TestEndpointsFollowPods(t *testing.T) {
	const ns = "s1-endpoints"
	e := scenario(t, ns)
	d := e.service(t, ns, "web", 6, httpPort, metricsPort)
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s1"})
	f := e.fleet(t, envoyfleet.Options{Size: 5, Target: p.XDSAddress(), NodePrefix: "s1"})

	httpName := translate.ClusterName(ns, "web", "http")
	metricsName := translate.ClusterName(ns, "web", "metrics")
	f.Subscribe(httpName, metricsName)

	pods := d.Pods()
	all := ipsOf(pods)
	waitAll(t, "both CLAs with every pod ready", f, holdsAll(holds(httpName, all, nil), holds(metricsName, all, nil)))

	// The whole CLA, field by field, on every client: one endpoint per pod at the container
	// port of its Service port, at priority 0, HEALTHY, in a locality group of its node's zone,
	// named after its pod.
	byIP := map[string]harness.Pod{}
	for _, pod := range pods {
		byIP[pod.IP] = pod
	}
	for i, c := range f.Clients {
		for name, port := range map[string]uint32{httpName: 8080, metricsName: 9091} {
			r, _ := c.Route(name)
			if got := r.CLA.GetClusterName(); got != name {
				t.Errorf("client %d: cluster_name %q, want %q", i, got, name)
			}
			zonesSeen := map[string]bool{}
			for _, ep := range harness.Endpoints(r.CLA) {
				pod, ok := byIP[ep.IP]
				switch {
				case !ok:
					t.Errorf("client %d %s: unknown endpoint %s", i, name, ep.IP)
				case ep.Port != port || ep.Protocol != corev3.SocketAddress_TCP:
					t.Errorf("client %d %s: endpoint %s has port %d/%v, want %d/TCP", i, name, ep.IP, ep.Port, ep.Protocol, port)
				case ep.Priority != 0 || ep.Health != corev3.HealthStatus_HEALTHY:
					t.Errorf("client %d %s: ready endpoint %s at priority %d, %v", i, name, ep.IP, ep.Priority, ep.Health)
				case ep.Zone != pod.Zone:
					t.Errorf("client %d %s: endpoint %s in zone %q, its node %s is in %q", i, name, ep.IP, ep.Zone, pod.Node, pod.Zone)
				case ep.Pod != pod.Name:
					t.Errorf("client %d %s: endpoint %s of pod %q, want %q", i, name, ep.IP, ep.Pod, pod.Name)
				case ep.Hostname != "":
					// The pods set no spec.hostname, so their endpoints have none;
					// the pod name would be a wrong Host header under auto_host_rewrite.
					t.Errorf("client %d %s: endpoint %s hostname %q, want none", i, name, ep.IP, ep.Hostname)
				}
				zonesSeen[ep.Zone] = true
			}
			if len(zonesSeen) != len(zones) {
				t.Errorf("client %d %s: endpoints in zones %v, want all of %v", i, name, zonesSeen, zones)
			}
			// One locality group per (priority, zone).
			groups := map[string]bool{}
			for _, g := range r.CLA.GetEndpoints() {
				k := fmt.Sprintf("%d/%s", g.GetPriority(), g.GetLocality().GetZone())
				if groups[k] {
					t.Errorf("client %d %s: two locality groups for %s", i, name, k)
				}
				groups[k] = true
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	ctx := t.Context()
	without := func(skip ...harness.Pod) []string {
		var ips []string
	next:
		for _, pod := range pods {
			for _, s := range skip {
				if pod.Name == s.Name {
					continue next
				}
			}
			ips = append(ips, pod.IP)
		}
		return ips
	}
	both := func(ips0, ips1 []string) func(envoysim.State) bool {
		return holdsAll(holds(httpName, ips0, ips1), holds(metricsName, ips0, ips1))
	}

	// Unready pods leave the CLA (kube-proxy's view: neither ready nor terminating).
	for _, pod := range []harness.Pod{pods[0], pods[3]} {
		if err := d.SetReady(ctx, pod, false); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, "two unready pods to leave", f, both(without(pods[0], pods[3]), nil))

	// And come back when ready again.
	for _, pod := range []harness.Pod{pods[0], pods[3]} {
		if err := d.SetReady(ctx, pod, true); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, "the pods to be back", f, both(all, nil))

	// A pod deleted with a grace period drains: serving and terminating, it moves to
	// priority 1, still HEALTHY, so Envoy uses it only if priority 0 runs dry.
	draining := pods[1]
	if err := d.Drain(ctx, draining); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "the draining pod at priority 1", f, both(without(draining), []string{draining.IP}))
	for i, c := range f.Clients {
		r, _ := c.Route(httpName)
		for _, ep := range harness.Endpoints(r.CLA) {
			if ep.IP == draining.IP && (ep.Health != corev3.HealthStatus_HEALTHY || ep.Zone != draining.Zone) {
				t.Errorf("client %d: draining endpoint %+v, want HEALTHY in zone %s", i, ep, draining.Zone)
			}
		}
	}

	// A terminating pod that is no longer ready stops serving: it goes.
	if err := d.SetReady(ctx, draining, false); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "the draining pod to stop serving", f, both(without(draining), nil))

	// Force-deleted, it is gone for good; a new pod joins.
	if err := d.Remove(ctx, draining); err != nil {
		t.Fatal(err)
	}
	added, err := d.Scale(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, "the new pod", f, both(append(without(draining), added[0].IP), nil))

	// Nobody ever saw a removal of a Service that exists. (A protocol check: deltaeds sends
	// removals to no client that subscribed by name, and a removal would not change what an
	// Envoy routes to anyway; the waits above read the routes.)
	for i, c := range f.Clients {
		if c.Removed(httpName) || c.Removed(metricsName) {
			t.Errorf("client %d: a CLA of a live Service was removed", i)
		}
	}
	m := metrics(t, p)
	if got := m.Value("deltaeds_xds_streams"); got != float64(len(f.Clients)) {
		t.Errorf("deltaeds_xds_streams = %v, want %d", got, len(f.Clients))
	}
	// The server counts the ACKs it has read, never more than the clients sent.
	if got, sent := m.Value("deltaeds_xds_acks_total"), float64(f.Stats().ACKs); got <= 0 || got > sent {
		t.Errorf("deltaeds_xds_acks_total = %v, clients sent %v ACKs", got, sent)
	}
	if got := m.Value("deltaeds_xds_nacks_total"); got != 0 {
		t.Errorf("deltaeds_xds_nacks_total = %v, want 0", got)
	}

	// The admin debug endpoints describe the same state.
	var streams struct {
		Count   int `json:"count"`
		Streams []struct {
			NodeID        string `json:"node_id"`
			Subscriptions int    `json:"subscriptions"`
		} `json:"streams"`
	}
	getJSON(t, p, "/debug/streams", &streams)
	if streams.Count != len(f.Clients) || len(streams.Streams) != len(f.Clients) {
		t.Errorf("/debug/streams lists %d streams, want %d", streams.Count, len(f.Clients))
	}
	for _, st := range streams.Streams {
		if !strings.HasPrefix(st.NodeID, "s1-") || st.Subscriptions != 2 {
			t.Errorf("/debug/streams: %+v, want a node s1-N subscribed to 2 names", st)
		}
	}
	var res struct {
		Count     int `json:"count"`
		Resources []struct {
			Name      string `json:"name"`
			Version   string `json:"version"`
			Endpoints int    `json:"endpoints"`
		} `json:"resources"`
	}
	getJSON(t, p, "/debug/resources?name="+url.QueryEscape(httpName), &res)
	// The server's resource against what it last sent the client: the xDS state.
	held, _ := f.Clients[0].Held(httpName)
	if res.Count != 1 || res.Resources[0].Version != held.Version || res.Resources[0].Endpoints != len(harness.Endpoints(held.CLA)) {
		t.Errorf("/debug/resources?name=%s = %+v; the clients hold version %s with %d endpoints",
			httpName, res, held.Version, len(harness.Endpoints(held.CLA)))
	}
}

// getJSON fetches an admin path and decodes its JSON body into v.
func getJSON(t *testing.T, p *harness.Deltaeds, path string, v any) {
	t.Helper()
	code, body, err := p.Get(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}
