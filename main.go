package main

import (
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	_ "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	_ "github.com/urfave/cli/v2"
	_ "go.uber.org/zap"
	_ "google.golang.org/grpc"
	_ "k8s.io/client-go/informers"
	_ "k8s.io/client-go/util/workqueue"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.uber.org/goleak"
)

func main() {}
