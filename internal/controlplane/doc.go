// Package controlplane runs a real, local Kubernetes control plane for tests: etcd, kube-apiserver
// and, on request, kube-controller-manager with only the EndpointSlice controllers, all on
// loopback with free ports, in a temporary directory that Stop removes.
//
// It owns:
//   - locating the binaries that `make testbin` builds into .testbin/ (or $DELTAEDS_TESTBIN);
//   - the throwaway PKI (a CA, serving and client certificates, service-account keys), generated
//     in Go, and the admin kubeconfig that both in-process clients and subprocesses use;
//   - the lifecycle of the child processes: start, readiness (/health, /readyz), stopping and
//     restarting only kube-apiserver to simulate an outage, and killing everything on Stop or
//     when the test process dies;
//   - a few "kubelet" helpers (kubelet.go) that play the node agent: nodes, pods and pod status,
//     since no kubelet runs.
//
// It must never:
//   - be imported by the product binary or any non-test code: it is test infrastructure only;
//   - download or build anything: missing binaries are an error that says to run `make testbin`,
//     and callers fail (t.Fatal) rather than skip, because CI builds the binaries first;
//   - listen on or send traffic to anything but 127.0.0.1;
//   - leave processes, goroutines or files behind after Stop.
package controlplane
