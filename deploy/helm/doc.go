// Package helm holds deltaeds' Helm chart (chart/) and the tests that keep it true; it has no Go
// code of its own.
//
// The chart renders, with its default values, exactly the objects of the kustomize base in
// deploy/ (less its Namespace and example Envoy), and adds what the base leaves to overlays:
// a value for every flag of `deltaeds serve`, the RBAC rules of the flags that read more (Nodes
// for --node-locality and --zone-from-node, Services for --internal-traffic-policy; rbac.nodes
// and rbac.services grant them alone), RoleBindings per watched namespace, mTLS from a Secret, an admin Service, a
// NetworkPolicy, and the Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule
// (the alerts of deploy/monitoring, copied into chart/files/ and kept identical by the test).
//
// The tests render the chart with Helm's Go library (no helm binary) and check: the default
// rendering against kustomize's rendering of the base, object by object; that every flag in
// `deltaeds serve --help` has a value, renders, and is accepted by the binary; that the schema
// and templates reject bad values; every rendering applied with server-side dry-run to a real
// kube-apiserver (internal/controlplane; `make testbin` builds it) with the Prometheus
// Operator's CRDs, warnings failing; and the RBAC through SubjectAccessReviews.
//
// It is its own Go module (go.mod, with a replace for the main module) so that Helm stays out of
// the product's module graph; `make helm-test` runs it.
//
// It must never: grant deltaeds more than the base does unless a value asks for it, render
// anything by default that the base does not, or be imported by anything.
package helm
