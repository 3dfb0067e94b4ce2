// Package bootstrap owns `deltaeds bootstrap`: it writes the static Envoy
// bootstrap that points a fleet of Envoys at deltaeds.
//
// # What it builds
//
// Build turns Options into a go-control-plane envoy.config.bootstrap.v3.Bootstrap:
//
//   - a static cluster named "deltaeds" (ClusterName) that reaches the
//     deltaeds Service over HTTP/2, with HTTP/2 keepalive pings and,
//     optionally, a TLS transport socket presenting a client certificate and
//     verifying the server's;
//   - dynamic_resources.ads_config with api_type DELTA_GRPC and
//     transport_api_version V3 through that cluster;
//   - one static cluster of type EDS per Service port asked for, whose
//     eds_cluster_config.service_name is the CLA name translate.ClusterName
//     gives it and whose eds_config goes through ADS;
//   - the node (id, cluster, locality) and an admin listener.
//
// Marshal renders it as protojson, either indented JSON or YAML, with a
// stable byte-for-byte output for equal Options, so a generated bootstrap
// can be committed and checked for staleness (deploy/ does).
//
// Command wires it to the command line; its usage errors are cli.Exit errors
// with code 2.
//
// # From the cluster
//
// With --from-cluster (cluster.go), the clusters also come from the API
// server: ListClusters lists the EndpointSlices (discovery.k8s.io/v1) of
// --namespace (default all) matching --label-selector, with the kubeconfig
// resolved as `deltaeds serve` resolves it (--kubeconfig, else in-cluster,
// else $KUBECONFIG, else ~/.kube/config), and ClustersFromSlices names one
// cluster per Service port exactly as serve publishes it, through
// translate.Service: slices without kubernetes.io/service-name, FQDN slices,
// and SCTP or unnumbered ports give none. ExcludeClusters drops those whose
// name matches an --exclude path.Match glob ("*" does not cross "/"), never a
// --cluster one, and UnionClusters merges both lists, deduplicated and sorted
// by name, so the output depends only on the flags and the cluster. Failing to
// reach or read the API server is an error (exit 1); a malformed pattern, or
// one of these flags without --from-cluster, is a usage error; finding no
// Service is a warning on the App's ErrWriter.
//
// # What it must never do
//
// Read the files it names (certificate paths are paths inside the Envoy
// container, not here), talk to deltaeds, talk to Kubernetes other than to
// list EndpointSlices for --from-cluster, or be imported by the xds,
// translate, watch or delta packages. The bootstrap must always pass
// go-control-plane's Validate: Build refuses to return one that does not.
package bootstrap
