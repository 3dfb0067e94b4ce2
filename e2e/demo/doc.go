// Command demo is `make demo`: deltaeds end to end on one machine, in one command.
//
// It starts a local Kubernetes control plane (etcd, kube-apiserver and kube-controller-manager
// running the real EndpointSlice controller, from `make testbin`), creates a sample workload
// (by default 50 Services of 20 pods over 3 zones), starts bin/deltaeds against it, attaches a
// fleet of simulated Envoys (envoysim), performs a Deployment-style rolling restart of every
// Service with a live progress line, restarts deltaeds to show that reconnecting Envoys are
// resent nothing, prints a summary table, and ends with how to point a real Envoy at deltaeds.
//
// It owns only the orchestration and the presentation; the pieces come from internal/controlplane
// (the cluster), e2e/harness (deltaeds as a child process, the kubelet and Deployment roles, the
// fleet, the latency tracker) and envoysim.
//
// It must never leave anything behind: Ctrl-C (or SIGTERM) at any moment stops the clients,
// deltaeds (SIGTERM, in its own process group so the terminal's signal reaches only the demo)
// and the control plane, removes its temporary folder, and checks that no child process is
// left; a second Ctrl-C exits at once, and the children die with it (parent-death signal).
// It must never send traffic anywhere but 127.0.0.1, and never write outside its temporary
// folder except where -bootstrap-out says.
package main
