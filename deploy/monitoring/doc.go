// Package monitoring holds deltaeds' Grafana dashboard (grafana-dashboard.json) and Prometheus
// alerts (prometheusrule.yaml, a Prometheus Operator PrometheusRule; runbooks in README.md,
// "Monitoring"), and the test that keeps them true; it has no Go code of its own.
//
// The test parses every dashboard query and alert expression with Prometheus' own parser
// (the alerts as Prometheus loads rule files, templates included), and checks that every metric
// they name is on /metrics of a real deltaeds serving a client from a real kube-apiserver.
//
// It is its own Go module (go.mod, with a replace for the main module) so that Prometheus'
// server module stays out of the product's module graph; `make monitoring-test` runs it.
//
// It must never: reference a metric deltaeds does not export (say in the README what cannot be
// answered instead), or be imported by anything.
package monitoring
