// Package control owns what the benchmark parent and a server child say to
// each other, and the one way both turn a workload step into a
// ClusterLoadAssignment.
//
// # The control channel
//
// A child (a server under test, see package servers) reads line commands on
// its standard input and answers on its standard output, one line per
// answered command:
//
//	set <change-id> <name> <ip:port>,<ip:port>,...   (no answer)
//	slice <change-id> <name> <slice> <ip:port>,...   (no answer)
//	serve                                            -> ready <host:port>
//	stats                                            -> stats <JSON of Stats>
//	profile                                          -> ok
//	quit                                             (the child exits)
//
// Before serve, set lines accumulate into the initial state, which the child
// loads in one batch through its server's own API before it opens its
// listener. After serve each set line is one change, applied at once, alone.
// Commands are processed strictly in order, so the answer to stats also
// tells the parent that every set before it has been applied.
//
// A slice line sets one EndpointSlice of the Service behind CLA name (no
// endpoints: the slice is deleted), as the EndpointSlice controller writes
// it when one pod changes. Workloads that send a CLA slice by slice (see
// bench.Workload.SliceSize) never send it with set. A server that
// translates EndpointSlices (deltaeds, through translate.ServiceCache as
// its watch does) is given the slices; every other server is given the CLA
// they make up, built by [BuildCLA] from the slices' endpoints by slice
// name.
//
// # The change marker
//
// Every CLA built by [BuildCLA] carries the id of the change that produced
// it in its locality's filter metadata ([MarkerKey]). The marker is opaque to
// every server and to Envoy; the parent reads it back with [ChangeID] on the
// client side, which is how a delivered version is attributed to the change
// that caused it whatever versioning scheme the server uses.
//
// A CLA a server translated from slices has no marker: translation writes
// only what the slices say. Such a CLA is attributed by its endpoints
// instead: [EndpointsPrint] of the set the parent sent, [CLAPrint] of the
// CLA a client received. A workload whose endpoint sets never repeat (a
// rolling restart only ever adds new addresses and removes old ones) has
// one print per change.
//
// # What it must never do
//
// Know about any server implementation, gRPC, or the fleet of clients. It is
// pure data and parsing, shared by both ends, so that both sides of a run
// agree byte for byte on what a change is.
package control
