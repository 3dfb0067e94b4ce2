// Package harness runs deltaeds end to end for the e2e scenarios and the demo: the real
// bin/deltaeds as a subprocess against a real kube-apiserver (see internal/controlplane) and a
// workload of real Services and Pods whose EndpointSlices the real EndpointSlice controller writes.
//
// It owns:
//   - building deltaeds from the module's source into a temporary folder (go build is cached,
//     so a stale binary is never run) and running it as a child process (StartDeltaeds, on
//     internal/supervisor): its flags, free ports, readiness through /readyz, graceful stop
//     (SIGTERM) with a deadline, restart on the same ports, kill, RSS and /metrics scraping
//     (internal/scrape);
//   - playing the kubelet and the Deployment controller on top of controlplane's helpers:
//     zoned nodes, pods with IPs from a private range, readiness flips, and rolling restarts
//     with maxSurge/maxUnavailable whose old pods drain as terminating before they go;
//   - readers of the CLAs envoysim clients hold (priorities, zones, ports, health); the fleets
//     themselves are internal/envoyfleet's;
//   - test-only plumbing: a TCP proxy that moves clients between replicas, throwaway mTLS
//     certificates, a propagation-latency tracker (split into the controller's part and
//     deltaeds' with an EndpointSlice watcher of its own), and Eventually, a poll on
//     k8s.io/apimachinery's wait.
//
// It must never:
//   - be imported by the product binary or by the packages it tests (xds, delta, watch,
//     translate): it observes deltaeds from outside, through its flags, ports and metrics;
//   - write EndpointSlices for Services that have selectors: the real controller does that;
//   - assert on timing: callers wait with generous deadlines, and measurements are reported,
//     not compared to a bound;
//   - leave a child process, goroutine or file behind once its Stop/Close returns.
package harness
