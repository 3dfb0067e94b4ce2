// Package bench owns deltaeds' side-by-side benchmark (issue 6): it runs
// each server under test (package servers) as a child process on loopback,
// drives it with one fleet of the project's simulated Envoys (envoysim, run by
// internal/envoyfleet as in e2e) and one workload, and reports how the anchors compare to
// deltaeds.
//
// # A run
//
// For each workload and each server, in turn and never two at once:
//
//  1. a child is started (the same binary re-executed with -serve=<kind>),
//     told the initial state over its control channel (package control) and
//     loads it in one batch through its server's own API before listening;
//  2. the fleet connects and subscribes; the initial sync time is until
//     every client holds every name it wants;
//  3. changes are sent at the workload's steady rate, each timestamped
//     as it is sent; every CLA carries the id of the change that made it
//     (or, translated from slices, is known by its endpoints), so when a
//     client applies a version the parent knows which change it delivered
//     (or overtook). A change's latency ends when its last
//     subscriber applied it; the server's CPU is the child's rusage over
//     the change phase, and its peak RSS its VmHWM;
//  4. for the reconnect workload the converged server is stopped instead,
//     a new child is started with the same state on the same address, and
//     the resources the reconnecting clients receive are counted.
//
// Issue 14 adds three workloads. fleet-curve runs at several fleet sizes
// (one table per point, then the curve: peak RSS per stream and per
// subscription above the wire limit's, CPU per change, p99); storm is the
// reconnect workload with the successor already listening on the same
// address (SO_REUSEPORT) when the old server is killed, so every stream
// reconnects at once, and each client asks for a canary CLA only the
// successor holds: its arrival is the stream's first answer, and anything
// else received is a resend that fails the run. cluster-100k has no fleet and
// no server kinds: it starts a real etcd and kube-apiserver
// (internal/controlplane, test infrastructure like envoyfleet), creates
// EndpointSlices directly, and runs the deltaeds binary itself (built by
// e2e/harness, or -deltaeds) to time its first full sync and read its memory
// at rest, with the API server's and etcd's alongside.
//
// rolling-10k sends its Service slice by slice (Workload.SliceSize): each
// step sets the one EndpointSlice it changed, deltaeds translates the
// slices through translate.ServiceCache as its watch does, and every other
// server is given the CLA they make up. A translated CLA has no change
// marker, so the parent attributes that CLA's versions by a print of their
// endpoints (control.CLAPrint), which never repeats in a rolling restart.
//
// The parent checks what the clients saw: every change must reach every
// subscriber and the fleet must record no protocol violation, or the run
// is reported as failed rather than fast.
//
// # What it must never do
//
// Tune an anchor to lose, or give one server a different workload, fleet or
// transport than another. Import the server packages into the parent: the
// servers live only in the children, so that CPU and memory are the
// server's alone. Write anywhere but the results directory, the profile
// directory it is given and the temporary folder of the cluster workload
// (removed at its end), or talk to anything but loopback.
package bench
