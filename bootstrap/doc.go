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
//   - the node (id, cluster, locality, and the Kubernetes node name in
//     node.metadata[NodeNameMetadataKey] under --node-name) and an admin
//     listener.
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
// # Merging into an existing bootstrap
//
// With --merge FILE (merge.go), ReadBootstrap decodes the user's bootstrap,
// YAML or JSON, strictly (unknown fields, duplicate keys and extension types
// not linked into deltaeds are errors naming the file; it must pass
// Validate), and Merge returns a copy with the deltaeds cluster that Build
// makes added (or, when the bootstrap has a cluster named "deltaeds",
// replaced whole at its position), dynamic_resources.ads_config replaced by
// Build's DELTA_GRPC one (the other dynamic_resources fields kept), and some
// static clusters converted to type EDS with eds_config ads{} (V3),
// service_name set when the CLA name differs from the cluster's name and
// load_assignment removed, every other field kept. The converted clusters
// are those named by --convert CLUSTER=NAMESPACE/SERVICE[/PORT] (the target
// follows ParseCluster), every --cluster, or --from-cluster Service port,
// that exists (one that does not is added as Build makes it) and, with --convert-matching, every static cluster
// whose name ParseCluster accepts. The node and admin are the bootstrap's
// own: the node and admin flags are usage errors with --merge. The output is
// protojson's rendering in --format (comments, key order and fields set to
// their default value are not kept); merging it again changes nothing.
//
// Merge refuses, naming the cluster, the flag that selected it and the
// field, and nothing is written: a --convert cluster that does not exist; a
// cluster named twice, or asked for under two CLA names; cluster_type (custom
// clusters: aggregate, dynamic forward proxy); type ORIGINAL_DST, lb_policy
// CLUSTER_PROVIDED or original_dst_lb_config; any DNS-only field
// (dns_lookup_family, dns_refresh_rate, dns_failure_refresh_rate, dns_jitter,
// respect_dns_ttl, dns_resolvers, use_tcp_for_dns_lookups,
// dns_resolution_config, typed_dns_resolver_config), which EDS would
// silently ignore, on a cluster of any type (a STRICT_DNS or LOGICAL_DNS
// cluster without them converts); load_assignment.policy, which deltaeds'
// ClusterLoadAssignment would replace; a cluster already EDS whose
// eds_config is not ADS. Since ADS becomes deltaeds, which serves only
// ClusterLoadAssignments, it also refuses a bootstrap where anything else
// (lds_config, cds_config, RDS in a listener, SDS in a transport socket,
// runtime...) uses ADS, and an EDS cluster it does not convert that got
// endpoints over an ADS server other than a "deltaeds" cluster.
//
// # What it must never do
//
// Read the files it names other than --merge's (certificate paths are
// paths inside the Envoy container, not here), talk to deltaeds, talk to
// Kubernetes other than to list EndpointSlices for --from-cluster, or be
// imported by the xds, translate, watch or delta packages. The bootstrap
// must always pass go-control-plane's Validate: Build and Merge refuse to
// return one that does not.
package bootstrap
