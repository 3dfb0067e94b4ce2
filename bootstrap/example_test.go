package bootstrap_test

import (
	"fmt"

	"github.com/deltaeds/deltaeds/bootstrap"
)

func ExampleBuild() {
	b, err := bootstrap.Build(bootstrap.Options{
		Server:       "deltaeds.deltaeds.svc.cluster.local:18000",
		Clusters:     []bootstrap.Cluster{{Namespace: "default", Service: "kubernetes", Port: "https"}},
		NodeID:       "envoy",
		NodeCluster:  "envoy",
		AdminAddress: "127.0.0.1:9901",
	})
	if err != nil {
		panic(err)
	}
	out, err := bootstrap.Marshal(b, bootstrap.YAML)
	if err != nil {
		panic(err)
	}
	fmt.Print(string(out))
	// Output:
	// admin:
	//   address:
	//     socket_address:
	//       address: 127.0.0.1
	//       port_value: 9901
	// dynamic_resources:
	//   ads_config:
	//     api_type: DELTA_GRPC
	//     grpc_services:
	//     - envoy_grpc:
	//         cluster_name: deltaeds
	//     set_node_on_first_message_only: true
	//     transport_api_version: V3
	// node:
	//   cluster: envoy
	//   id: envoy
	// static_resources:
	//   clusters:
	//   - connect_timeout: 5s
	//     load_assignment:
	//       cluster_name: deltaeds
	//       endpoints:
	//       - lb_endpoints:
	//         - endpoint:
	//             address:
	//               socket_address:
	//                 address: deltaeds.deltaeds.svc.cluster.local
	//                 port_value: 18000
	//     name: deltaeds
	//     type: STRICT_DNS
	//     typed_extension_protocol_options:
	//       envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
	//         '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
	//         explicit_http_config:
	//           http2_protocol_options:
	//             connection_keepalive:
	//               interval: 30s
	//               timeout: 10s
	//   - connect_timeout: 5s
	//     eds_cluster_config:
	//       eds_config:
	//         ads: {}
	//         resource_api_version: V3
	//       service_name: default/kubernetes/https
	//     name: default/kubernetes/https
	//     type: EDS
}
