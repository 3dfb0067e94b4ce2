package harness

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/deltaeds/deltaeds/translate"
)

// Endpoint is one LbEndpoint of a CLA, flattened with its group's priority and zone.
type Endpoint struct {
	IP       string
	Port     uint32
	Protocol corev3.SocketAddress_Protocol
	Priority uint32
	Zone     string
	Health   corev3.HealthStatus
	// Hostname is Endpoint.hostname: the EndpointSlice endpoint's own
	// hostname, empty for most pods.
	Hostname string
	// Pod is the pod name deltaeds puts in the endpoint's metadata.
	Pod string
}

// Endpoints flattens a CLA (nil gives nil).
func Endpoints(cla *endpointv3.ClusterLoadAssignment) []Endpoint {
	var out []Endpoint
	for _, g := range cla.GetEndpoints() {
		for _, lb := range g.GetLbEndpoints() {
			ep := lb.GetEndpoint()
			sa := ep.GetAddress().GetSocketAddress()
			out = append(out, Endpoint{
				IP:       sa.GetAddress(),
				Port:     sa.GetPortValue(),
				Protocol: sa.GetProtocol(),
				Priority: g.GetPriority(),
				Zone:     g.GetLocality().GetZone(),
				Health:   lb.GetHealthStatus(),
				Hostname: ep.GetHostname(),
				Pod:      lb.GetMetadata().GetFilterMetadata()[translate.MetadataKey].GetFields()[translate.MetadataPod].GetStringValue(),
			})
		}
	}
	return out
}

// UsableHealth reports whether Envoy would balance to a host with this status in normal
// operation: HEALTHY and UNKNOWN. UNHEALTHY and TIMEOUT mark it failed, and current Envoy
// excludes DRAINING hosts altogether (../shared/envoy-client-facts.md).
func UsableHealth(h corev3.HealthStatus) bool {
	return h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN
}

// Usable counts the endpoints Envoy could send traffic to, at any priority.
func Usable(cla *endpointv3.ClusterLoadAssignment) int {
	n := 0
	for _, e := range Endpoints(cla) {
		if UsableHealth(e.Health) {
			n++
		}
	}
	return n
}

// IPsAt returns the sorted IPs of the usable endpoints at priority p.
func IPsAt(cla *endpointv3.ClusterLoadAssignment, p uint32) []string {
	var ips []string
	for _, e := range Endpoints(cla) {
		if e.Priority == p && UsableHealth(e.Health) {
			ips = append(ips, e.IP)
		}
	}
	return SortIPs(ips)
}

// SortIPs sorts IP strings numerically, in place, and returns them.
func SortIPs(ips []string) []string {
	sort.Slice(ips, func(i, j int) bool {
		a, errA := netip.ParseAddr(ips[i])
		b, errB := netip.ParseAddr(ips[j])
		if errA != nil || errB != nil {
			return ips[i] < ips[j]
		}
		return a.Less(b)
	})
	return ips
}

// SameIPs reports whether two sorted IP lists are equal.
func SameIPs(a, b []string) bool { return slices.Equal(a, b) }

// Summary renders a CLA compactly for failure messages: "p0/zone-a: 10.64.0.1:8080 ...".
func Summary(cla *endpointv3.ClusterLoadAssignment) string {
	if cla == nil {
		return "<none>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", cla.GetClusterName())
	for _, g := range cla.GetEndpoints() {
		fmt.Fprintf(&b, " [p%d/%s:", g.GetPriority(), g.GetLocality().GetZone())
		for i, lb := range g.GetLbEndpoints() {
			if i == 8 {
				fmt.Fprintf(&b, " …+%d", len(g.GetLbEndpoints())-8)
				break
			}
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			fmt.Fprintf(&b, " %s:%d/%s", sa.GetAddress(), sa.GetPortValue(), lb.GetHealthStatus())
		}
		b.WriteString("]")
	}
	if len(cla.GetEndpoints()) == 0 {
		b.WriteString(" (no endpoints)")
	}
	return b.String()
}
