package envoysim

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Locality is a locality as Envoy keys it: region, zone and sub_zone
// together (source/common/upstream/locality.h, LocalityEqualTo and
// LocalityHash compare the three as a tuple).
type Locality struct {
	Region, Zone, SubZone string
}

// LocalityOf returns l as Envoy keys it; nil is the empty locality.
func LocalityOf(l *corev3.Locality) Locality {
	return Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()}
}

// OverprovisioningFactor is Envoy's default overprovisioning factor, 1.4
// (kDefaultOverProvisioningFactor = 140 in source/common/upstream/upstream_impl.h,
// load_balancer_impl.h in older releases), which applies when the CLA sets no
// policy.overprovisioning_factor, as deltaeds's never do.
const OverprovisioningFactor = 1.4

// LocalHosts returns the endpoints of one priority of cla that Envoy's
// zone-aware routing treats as local to a node whose node.locality is
// local, and whether there are any. Envoy groups a priority's hosts by
// locality, matches the node's locality against them with all three fields
// compared together, and has a local locality only when the node declares
// one and some host of that priority carries exactly it: groups with no
// endpoints add no hosts, and several groups with the same locality are one
// (source/common/upstream/upstream_impl.cc,
// PriorityStateManager::updateClusterPrioritySet: hosts_per_locality,
// non_empty_local_locality). A node that sets a region while the CLAs carry
// only zones therefore never finds local hosts.
func LocalHosts(local *corev3.Locality, cla *endpointv3.ClusterLoadAssignment, priority uint32) ([]*endpointv3.LbEndpoint, bool) {
	if local == nil {
		// local_info_node_.has_locality() is false.
		return nil, false
	}
	want := LocalityOf(local)
	var hosts []*endpointv3.LbEndpoint
	for _, g := range cla.GetEndpoints() {
		if g.GetPriority() == priority && LocalityOf(g.GetLocality()) == want {
			hosts = append(hosts, g.GetLbEndpoints()...)
		}
	}
	return hosts, len(hosts) > 0
}

// LocalityShares returns the share of one priority's traffic each of its
// localities receives when the cluster sets locality_weighted_lb_config, as
// Envoy computes it: a locality's weight is its group's
// load_balancing_weight, 0 when unset (PriorityStateManager::
// initializePriorityFor records only set weights and
// updateClusterPrioritySet reads the others from a map that defaults to 0);
// its effective weight is weight * min(1, overprovisioning * healthy/total)
// (HostSetImpl::effectiveLocalityWeight), and only localities with a
// positive effective weight are scheduled (HostSetImpl::
// rebuildLocalityScheduler), in proportion to it. Hosts count as healthy
// when their EDS health status is HEALTHY or UNKNOWN: UNHEALTHY and TIMEOUT
// set FAILED_EDS_HEALTH, DEGRADED and DRAINING other flags that take a host
// out of the healthy list (upstream_impl.cc, HostImplBase::setEdsHealthFlag).
// No active health checking or outlier detection is modelled. Localities of no traffic are
// absent; a priority with no weighted locality gives an empty map.
func LocalityShares(cla *endpointv3.ClusterLoadAssignment, priority uint32) map[Locality]float64 {
	type tally struct {
		weight         uint32
		total, healthy int
	}
	by := map[Locality]*tally{}
	for _, g := range cla.GetEndpoints() {
		if g.GetPriority() != priority {
			continue
		}
		l := LocalityOf(g.GetLocality())
		t := by[l]
		if t == nil {
			t = &tally{}
			by[l] = t
		}
		if g.GetLocality() != nil && g.GetLoadBalancingWeight() != nil {
			t.weight = g.GetLoadBalancingWeight().GetValue()
		}
		for _, lb := range g.GetLbEndpoints() {
			t.total++
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
				t.healthy++
			}
		}
	}
	effective := map[Locality]float64{}
	var sum float64
	for l, t := range by {
		if t.total == 0 {
			continue // Envoy keeps no host list for a locality without hosts
		}
		w := float64(t.weight) * min(1, OverprovisioningFactor*float64(t.healthy)/float64(t.total))
		if w > 0 {
			effective[l] = w
			sum += w
		}
	}
	for l, w := range effective {
		effective[l] = w / sum
	}
	return effective
}
