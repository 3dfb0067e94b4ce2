package translate

import (
	"strings"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// ClusterName returns the CLA name of one port of a Service:
// "<namespace>/<service>/<port>", or "<namespace>/<service>" when port is ""
// (the Service's only port may be unnamed, and Envoy configs written by hand
// should not need a trailing slash for it).
func ClusterName(namespace, service, port string) string {
	if port == "" {
		return namespace + "/" + service
	}
	return namespace + "/" + service + "/" + port
}

// ParseClusterName splits a name built by [ClusterName]. It reports ok=false
// for anything ClusterName cannot have produced from a valid Service, so
// callers can tell names they own from names a client invented.
//
// The port part is everything after the second "/": namespaces and Service
// names cannot contain "/", so the split is unambiguous even for a port name
// that (against Kubernetes validation) does.
func ParseClusterName(name string) (namespace, service, port string, ok bool) {
	namespace, rest, found := strings.Cut(name, "/")
	if !found || namespace == "" {
		return "", "", "", false
	}
	service, port, hasPort := strings.Cut(rest, "/")
	if service == "" || (hasPort && port == "") {
		// "ns/svc/" would read back as the unnamed port, whose canonical
		// name has no trailing slash: two names for one CLA would make a
		// client subscribed to the other one wait forever.
		return "", "", "", false
	}
	return namespace, service, port, true
}

// EmptyCLA returns a CLA with no endpoints. [Service] never returns one for a
// Service that has no slices left; the caller, which remembers the names it
// published, sends EmptyCLA for each so that Envoy drops the endpoints instead
// of keeping the last ones it saw. name must not be empty: a CLA without a
// name fails Validate.
func EmptyCLA(name string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name}
}
