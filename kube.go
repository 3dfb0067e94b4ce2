package main

import (
	"fmt"
	"net/http"

	promversion "github.com/prometheus/common/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/bootstrap"
)

// kube is the Kubernetes client of `deltaeds serve`.
type kube struct {
	client kubernetes.Interface
	// http is the client's transport, whose idle connections are closed at
	// the stop.
	http *http.Client
	// source says where the configuration came from (a kubeconfig path,
	// in-cluster, or "given" for cfg.RESTConfig), host is the API server.
	source, host string
}

// newKube loads the kubeconfig the way every deltaeds command does
// (bootstrap.LoadKubeconfig), unless cfg.RESTConfig is given, and applies
// --kube-qps, --kube-burst and deltaeds' user agent.
func newKube(cfg serveConfig) (*kube, error) {
	rc, source := cfg.RESTConfig, "given"
	if rc == nil {
		var err error
		if rc, source, err = bootstrap.LoadKubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	rc = rest.CopyConfig(rc)
	rc.QPS = float32(cfg.KubeQPS)
	rc.Burst = cfg.KubeBurst
	rc.UserAgent = "deltaeds/" + promversion.Version
	httpClient, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (%s config): %w", source, err)
	}
	client, err := kubernetes.NewForConfigAndClient(rc, httpClient)
	if err != nil {
		httpClient.CloseIdleConnections()
		return nil, fmt.Errorf("kubernetes client (%s config): %w", source, err)
	}
	return &kube{client: client, http: httpClient, source: source, host: rc.Host}, nil
}
