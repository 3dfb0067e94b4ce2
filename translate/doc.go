// Package translate owns the mapping from Kubernetes EndpointSlices to Envoy
// ClusterLoadAssignments (CLAs): given every EndpointSlice of one Service, it
// computes that Service's CLAs, one per port name, and counts what it had to
// leave out. Everything deltaeds knows about the meaning of EndpointSlice
// fields lives here, so the rest of the program moves opaque CLAs around.
//
// # Names
//
// A CLA is named "<namespace>/<service>/<port-name>", or "<namespace>/<service>"
// for the unnamed port. The name is both CLA.cluster_name and what an Envoy
// cluster puts in eds_cluster_config.service_name; [ClusterName] builds it and
// [ParseClusterName] reads it back. Namespaces and Service names are DNS labels
// and never contain "/", which is what makes the name unambiguous.
//
// # What goes in
//
// Endpoints are merged across slices, keyed by address, port and protocol
// within each port name. With both address families served (the default),
// a pod's IPv4 and IPv6 endpoints, paired by targetRef, are one LbEndpoint
// whose additional_addresses holds the IPv6 address, so each pod takes one
// share of traffic and Envoy connects to it with Happy Eyeballs; with one
// family ([IPFamily]) the other's slices are skipped. Conditions follow
// kube-proxy: ready endpoints carry traffic at priority 0; serving but
// terminating ones sit at priority 1, HEALTHY, so Envoy fails over to them
// when nothing is ready (and, in part, when Envoy's own outlier detection or
// health checks leave less than ~71% of priority 0 healthy). Unready ones,
// sent only on request, sit at priority 2, UNHEALTHY, where they take no
// traffic and lower no other priority's health. See [Service] for the precise rules and the
// choices made where the API leaves room.
//
// # Using this package
//
//  1. Gather every EndpointSlice labelled kubernetes.io/service-name=NAME in
//     the Service's namespace ([ServedSelector] builds the label selector
//     that leaves out Services handed to another proxy), in any order.
//  2. Call [Service] with [Options] (the same for every call, except
//     InternalTrafficLocal, which is the Service's own). It returns one CLA
//     per port name, named by [ClusterName], and counts what it left out.
//  3. Publish the CLAs whole; a port or Service that produced a CLA before
//     and no longer does should get [EmptyCLA] for a while rather than a
//     removal (Envoy ignores EDS removals).
//  4. For the CLAs in Result.Topologies, a client at a [View] receives
//     Topology.CLA(view) instead, shared by every view with the same
//     Topology.Key.
//
// # Where the client runs
//
// A CLA whose slices carry topology hints, or whose Service has
// internalTrafficPolicy Local, also has a [Topology]: it builds the variant
// a client receives for its [View] (zone, node), with kube-proxy's rules
// for hints and policy and priorities where kube-proxy drops endpoints, and
// names it with a key shared by every view that gets the same bytes. The
// plain CLA stays what a client that tells no place receives. (The store's
// per-view variants that serve them are issue 11's next step.)
//
// # Translating a large Service again
//
// [ServiceCache] gives what [Service] gives, for a Service translated
// again and again as its slices change, at a cost that follows the change:
// it keeps each slice's translated endpoints (by UID and resourceVersion),
// each port's merged, paired and ordered endpoints, and each endpoint's
// encoding, and returns with every CLA its deterministic encoding in
// pieces (Result.Encoded), so a one-endpoint change in a 10,000-endpoint
// Service neither re-translates nor re-marshals the other 9,999. The state
// is the caller's, explicitly: one cache per Service, used by one
// goroutine at a time.
//
// # What it must never do
//
// Do I/O, hold state between calls (other than a [ServiceCache] the caller
// owns), log, or import gRPC, client-go informers,
// or the xds, delta and watch packages. Its functions are pure: equal inputs,
// in any order, give byte-identical output under deterministic marshalling,
// which is what lets the store skip updates that change nothing. Malformed
// input is skipped and counted, never a panic and never an invalid CLA: the
// input comes from an API server we do not control, and one bad endpoint must
// not take a whole Service, or the process, down.
package translate
