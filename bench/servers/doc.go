// Package servers owns the four Delta ADS servers the benchmark compares,
// and the child process loop that runs one of them under the parent's
// control (see package control for the protocol).
//
// The servers, each fed through its own update API:
//
//   - deltaeds: xds.Store.Apply and delta.Server, exactly as deltaeds runs;
//     a Service a workload sends as EndpointSlices (control.Slice) it
//     translates itself through translate.ServiceCache and applies with the
//     assembled encoding, as deltaeds' watch does for a large Service (the
//     other servers are given the CLA the slices make up);
//   - linear: go-control-plane v0.14's LinearCache for the EDS type URL with
//     its delta server (server.NewServer), updated with UpdateResources, the
//     way its documentation and Contour 1.32+ use it for EDS;
//   - snapshot: go-control-plane's SnapshotCache in ADS mode keyed by node
//     id, every node given a snapshot holding every CLA, and SetSnapshot
//     called for every node on every change: what Contour ran before 1.32.
//     One snapshot object is shared by all nodes of one change, so its
//     version map is hashed once per change, not once per node;
//   - wire: the floor. Each CLA's response bytes are marshaled once when it
//     changes and written as they are to every subscribed stream, through a
//     gRPC codec that passes pre-marshaled bytes. No ACK tracking, no
//     coalescing, no per-stream versions: a name index and a nonce.
//
// # What it must never do
//
// Tune an anchor to lose: each go-control-plane cache is configured as its
// documentation and its best-known user configure it, and every server gets
// the same gRPC transport defaults except for options a server's own
// documentation prescribes. Nor may it measure anything itself beyond the
// child's own resource usage: latency and bytes are seen by the parent's
// clients, so that every server is judged by the same witness.
package servers
