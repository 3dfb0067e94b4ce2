package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// The extensions a hand-written bootstrap commonly uses: --merge must
	// decode their typed_config to write them back. A type not linked here is
	// refused by ReadBootstrap with an error naming it.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/aggregate/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dynamic_forward_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_forward_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_to_metadata/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/health_check/event_sinks/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/xff/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/tcp/v3"
)

// Conversion asks Merge to turn the static cluster named From into an EDS
// cluster fed by deltaeds with the endpoints of To.
type Conversion struct {
	From string
	To   Cluster
}

// ParseConversion reads a --convert value, "CLUSTER=NAMESPACE/SERVICE[/PORT]".
// The target follows the rule of ParseCluster.
func ParseConversion(s string) (Conversion, error) {
	from, to, ok := strings.Cut(s, "=")
	from, to = strings.TrimSpace(from), strings.TrimSpace(to)
	if !ok || from == "" || to == "" {
		return Conversion{}, fmt.Errorf("--convert %q: want CLUSTER=NAMESPACE/SERVICE[/PORT]", s)
	}
	if from == ClusterName {
		return Conversion{}, fmt.Errorf("--convert %q: %q is the cluster that reaches deltaeds", s, ClusterName)
	}
	c, err := ParseCluster(to)
	if err != nil {
		return Conversion{}, fmt.Errorf("--convert %q: %w", s, err)
	}
	return Conversion{From: from, To: c}, nil
}

// MergeOptions say how Merge changes an existing bootstrap.
type MergeOptions struct {
	// Options give the deltaeds cluster and ADS config exactly as Build
	// makes them (Server, TLS, ConnectTimeout, Keepalive*). Options.Clusters
	// are converted when the bootstrap has a static cluster of that name and
	// added as new EDS clusters (as Build makes them) otherwise. Node and
	// AdminAddress are not used: the bootstrap keeps its own node and admin.
	Options
	// Convert are the clusters to convert under another CLA name.
	Convert []Conversion
	// ConvertMatching converts, as well, every static cluster whose name
	// already is a valid CLA name (NAMESPACE/SERVICE[/PORT], ParseCluster).
	ConvertMatching bool
}

// dnsOnlyFields are Cluster fields that only mean something to Envoy's own
// DNS resolution. An EDS cluster would ignore them, so Merge refuses a
// cluster that sets one rather than silently drop what the user asked for.
var dnsOnlyFields = []protoreflect.Name{
	"dns_lookup_family", "dns_refresh_rate", "dns_failure_refresh_rate", "dns_jitter",
	"respect_dns_ttl", "dns_resolvers", "use_tcp_for_dns_lookups", "dns_resolution_config",
	"typed_dns_resolver_config",
}

var jsonPosition = regexp.MustCompile(`^\(line \d+:\d+\): `)

// ReadBootstrap decodes an Envoy bootstrap in YAML or JSON strictly: unknown
// fields, duplicate keys and extension types not linked into deltaeds are
// errors, and the result must pass Validate. name (the file's) prefixes
// every error.
func ReadBootstrap(name string, data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSONStrict(data) // JSON is YAML: this accepts both
	if err != nil {
		return nil, fmt.Errorf("%s: parse: %w", name, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		// protojson's positions are in the JSON made from the file, not
		// in the file, and it varies its spaces on purpose: drop both.
		msg := strings.ReplaceAll(err.Error(), "\u00a0", " ")
		msg = jsonPosition.ReplaceAllString(strings.TrimPrefix(msg, "proto: "), "")
		return nil, fmt.Errorf("%s: not an envoy.config.bootstrap.v3.Bootstrap: %s", name, msg)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid bootstrap: %w", name, err)
	}
	return b, nil
}

// Merge returns a copy of b that gets endpoints from deltaeds: the deltaeds
// cluster added (or replaced where b has a cluster of that name),
// dynamic_resources.ads_config pointing at it with DELTA_GRPC, and the
// clusters opts name turned into EDS clusters fed by ADS, each keeping every
// other setting. Everything else is left as it is. It refuses, naming the
// cluster and the field, what it cannot convert without changing what the
// cluster means; b is never modified.
func Merge(b *bootstrapv3.Bootstrap, opts MergeOptions) (*bootstrapv3.Bootstrap, error) {
	// Build makes the deltaeds cluster, the ADS config and the new EDS
	// clusters exactly as a fresh bootstrap has them; node and admin only
	// need to pass its checks.
	built, err := buildFresh(opts.Options)
	if err != nil {
		return nil, err
	}
	freshClusters := map[string]*clusterv3.Cluster{}
	for _, c := range built.GetStaticResources().GetClusters() {
		freshClusters[c.GetName()] = c
	}

	out := proto.Clone(b).(*bootstrapv3.Bootstrap)
	if out.StaticResources == nil {
		out.StaticResources = &bootstrapv3.Bootstrap_StaticResources{}
	}
	clusters := out.StaticResources.Clusters
	index := map[string]int{}
	for i, c := range clusters {
		if _, dup := index[c.GetName()]; dup {
			return nil, fmt.Errorf("static_resources.clusters: cluster %q defined twice", c.GetName())
		}
		index[c.GetName()] = i
	}

	// Which cluster becomes which CLA, and where the request came from.
	targets := map[string]Cluster{}
	origin := map[string]string{}
	want := func(from string, to Cluster, why string) error {
		if prev, ok := targets[from]; ok && prev != to {
			return fmt.Errorf("cluster %q: %s asks for %q but %s for %q", from, why, to.Name(), origin[from], prev.Name())
		}
		targets[from], origin[from] = to, why
		return nil
	}
	var added []*clusterv3.Cluster
	for _, c := range opts.Clusters {
		if _, ok := index[c.Name()]; !ok {
			added = append(added, freshClusters[c.Name()])
			continue
		}
		if err := want(c.Name(), c, "--cluster "+c.Name()); err != nil {
			return nil, err
		}
	}
	for _, cv := range opts.Convert {
		if _, ok := index[cv.From]; !ok {
			return nil, fmt.Errorf("cluster %q (--convert %s=%s): no static cluster of that name in the bootstrap", cv.From, cv.From, cv.To.Name())
		}
		if err := want(cv.From, cv.To, "--convert "+cv.From+"="+cv.To.Name()); err != nil {
			return nil, err
		}
	}
	if opts.ConvertMatching {
		for _, c := range clusters {
			if _, ok := targets[c.GetName()]; ok {
				continue
			}
			if to, err := ParseCluster(c.GetName()); err == nil {
				targets[c.GetName()], origin[c.GetName()] = to, "--convert-matching"
			}
		}
	}

	// The ADS server the bootstrap had: whatever used it now talks to
	// deltaeds, which only serves endpoints.
	oldADS := adsTarget(out.GetDynamicResources().GetAdsConfig())
	if err := checkADSUsers(out, targets, oldADS); err != nil {
		return nil, err
	}

	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		converted, err := convert(clusters[index[n]], targets[n])
		if err != nil {
			return nil, fmt.Errorf("cluster %q (%s): %w", n, origin[n], err)
		}
		clusters[index[n]] = converted
	}

	if i, ok := index[ClusterName]; ok {
		clusters[i] = freshClusters[ClusterName]
	} else {
		clusters = append(clusters, freshClusters[ClusterName])
	}
	out.StaticResources.Clusters = append(clusters, added...)
	if out.DynamicResources == nil {
		out.DynamicResources = &bootstrapv3.Bootstrap_DynamicResources{}
	}
	out.DynamicResources.AdsConfig = built.GetDynamicResources().GetAdsConfig()

	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("merged bootstrap is invalid: %w", err)
	}
	return out, nil
}

// buildFresh is Build with a placeholder node and admin: Merge takes only
// the clusters and the ADS config of its result.
func buildFresh(opts Options) (*bootstrapv3.Bootstrap, error) {
	opts.NodeID, opts.NodeCluster, opts.AdminAddress = "merge", "merge", "127.0.0.1:0"
	return Build(opts)
}

// convert returns c as an EDS cluster of to's endpoints fed by ADS, or an
// error naming the field that stops it.
func convert(c *clusterv3.Cluster, to Cluster) (*clusterv3.Cluster, error) {
	if ct := c.GetClusterType(); ct != nil {
		return nil, fmt.Errorf("cluster_type %q: a custom cluster (aggregate, dynamic forward proxy...) cannot become an EDS cluster", ct.GetName())
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
	case clusterv3.Cluster_EDS:
		src := c.GetEdsClusterConfig().GetEdsConfig()
		if src.GetAds() == nil {
			return nil, fmt.Errorf("type EDS: eds_cluster_config.eds_config %s, not ADS: its endpoints come from another server", configSourceKind(src))
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		return nil, errors.New("type ORIGINAL_DST: it routes to each connection's original destination, not to a Service's endpoints")
	default:
		return nil, fmt.Errorf("type %v cannot become EDS", c.GetType())
	}
	if c.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED {
		return nil, errors.New("lb_policy CLUSTER_PROVIDED: only a cluster that brings its own load balancer can use it")
	}
	if c.GetOriginalDstLbConfig() != nil {
		return nil, errors.New("original_dst_lb_config: only means something to an ORIGINAL_DST cluster")
	}
	m := c.ProtoReflect()
	for _, name := range dnsOnlyFields {
		if fd := m.Descriptor().Fields().ByName(name); fd != nil && m.Has(fd) {
			return nil, fmt.Errorf("%s: a DNS setting EDS would ignore (deltaeds sends IP addresses); remove it to convert the cluster", name)
		}
	}
	if p := c.GetLoadAssignment().GetPolicy(); p != nil {
		return nil, errors.New("load_assignment.policy: deltaeds' ClusterLoadAssignment replaces it; remove it to convert the cluster")
	}
	out := proto.Clone(c).(*clusterv3.Cluster)
	out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	out.LoadAssignment = nil
	out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		},
	}
	// service_name only when the CLA name differs from the cluster's, but
	// one already there that names the right CLA is kept (Build writes it
	// always, so merging a fresh bootstrap changes nothing).
	if to.Name() != c.GetName() || c.GetEdsClusterConfig().GetServiceName() == to.Name() {
		out.EdsClusterConfig.ServiceName = to.Name()
	}
	return out, nil
}

func configSourceKind(src *corev3.ConfigSource) string {
	switch s := src.GetConfigSourceSpecifier().(type) {
	case nil:
		return "is not set"
	case *corev3.ConfigSource_Path:
		//lint:ignore SA1019 existing bootstraps may still name their file this way
		return "is the file " + s.Path
	case *corev3.ConfigSource_PathConfigSource:
		return "is the file " + s.PathConfigSource.GetPath()
	case *corev3.ConfigSource_ApiConfigSource:
		if g := s.ApiConfigSource.GetGrpcServices(); len(g) > 0 && g[0].GetEnvoyGrpc() != nil {
			return fmt.Sprintf("is an api_config_source (%v) through cluster %q", s.ApiConfigSource.GetApiType(), g[0].GetEnvoyGrpc().GetClusterName())
		}
		return fmt.Sprintf("is an api_config_source (%v)", s.ApiConfigSource.GetApiType())
	case *corev3.ConfigSource_Self:
		return "is self (the server that sent the cluster)"
	}
	return "is another config source"
}

// adsTarget names the server an ads_config talks to: the cluster of its
// envoy_grpc service, or a description for anything else; "" for none.
func adsTarget(ads *corev3.ApiConfigSource) string {
	if ads == nil {
		return ""
	}
	if g := ads.GetGrpcServices(); len(g) > 0 {
		if e := g[0].GetEnvoyGrpc(); e != nil {
			return e.GetClusterName()
		}
		if gg := g[0].GetGoogleGrpc(); gg != nil {
			return "google_grpc " + gg.GetTargetUri()
		}
	}
	return "api_type " + ads.GetApiType().String()
}

// checkADSUsers refuses a bootstrap where something other than the clusters
// being converted gets resources over ADS, since after the merge ADS is
// deltaeds: it serves only ClusterLoadAssignments, so listeners, routes,
// clusters, secrets or runtime asked of it would never come, and EDS
// clusters fed by another ADS server would switch servers.
func checkADSUsers(b *bootstrapv3.Bootstrap, converted map[string]Cluster, oldADS string) error {
	var firstErr error
	var walk func(path string, m protoreflect.Message)
	walk = func(path string, m protoreflect.Message) {
		if firstErr != nil {
			return
		}
		if a, ok := m.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err == nil {
				walk(path, inner.ProtoReflect())
			}
			return
		}
		if cs, ok := m.Interface().(*corev3.ConfigSource); ok && cs.GetAds() != nil {
			firstErr = fmt.Errorf("%s uses ADS, which the merge points at deltaeds; deltaeds serves only endpoints (ClusterLoadAssignments)", path)
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(fmt.Sprintf("%s[%d]", p, i), l.Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(fmt.Sprintf("%s[%q]", p, k.String()), mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(p, v.Message())
			}
			return firstErr == nil
		})
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if _, ok := converted[c.GetName()]; ok || c.GetName() == ClusterName {
			continue
		}
		path := fmt.Sprintf("cluster %q", c.GetName())
		if c.GetEdsClusterConfig().GetEdsConfig().GetAds() != nil {
			if oldADS != "" && oldADS != ClusterName {
				return fmt.Errorf("%s: eds_cluster_config.eds_config gets endpoints over ADS from %s; the merge would move it to deltaeds (convert it with --convert, or give it another config source)", path, oldADS)
			}
			// Already fed by deltaeds (or by no ADS at all): the rest of
			// it still must not use ADS.
			c = proto.Clone(c).(*clusterv3.Cluster)
			c.EdsClusterConfig.EdsConfig = nil
		}
		walk(path, c.ProtoReflect())
	}
	rest := proto.Clone(b).(*bootstrapv3.Bootstrap)
	rest.StaticResources.Clusters = nil
	if rest.DynamicResources != nil {
		rest.DynamicResources.AdsConfig = nil
	}
	walk("bootstrap", rest.ProtoReflect())
	return firstErr
}

// runMerge is `deltaeds bootstrap --merge FILE`.
func runMerge(c *cli.Context) error {
	path := c.String("merge")
	if path == "" {
		return usage("--convert and --convert-matching need --merge FILE")
	}
	for _, f := range []string{"node-id", "node-cluster", "node-region", "node-zone", "node-sub-zone", "node-name", "envoy-admin-address"} {
		if c.IsSet(f) {
			return usage("--%s: with --merge the bootstrap keeps its own node and admin", f)
		}
	}
	opts, format, err := OptionsFromFlags(c)
	if err != nil {
		return usage("%v", err)
	}
	if _, err := buildFresh(opts); err != nil {
		return usage("%v", err)
	}
	mo := MergeOptions{Options: opts, ConvertMatching: c.Bool("convert-matching")}
	for _, s := range c.StringSlice("convert") {
		cv, err := ParseConversion(s)
		if err != nil {
			return usage("%v", err)
		}
		mo.Convert = append(mo.Convert, cv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bootstrap: --merge: %v", err), 1)
	}
	in, err := ReadBootstrap(path, data)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bootstrap: --merge %v", err), 1)
	}
	// With --from-cluster, the Services found are --cluster ones too.
	if mo.Options, err = addClustersFromCluster(c, mo.Options); err != nil {
		return err
	}
	merged, err := Merge(in, mo)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bootstrap: --merge %s: %v", path, err), 1)
	}
	out, err := Marshal(merged, format)
	if err != nil {
		return err
	}
	dest := c.String("output")
	if dest == "-" || dest == "" {
		if _, err := c.App.Writer.Write(out); err != nil {
			return fmt.Errorf("bootstrap: write: %w", err)
		}
		return nil
	}
	return writeFile(dest, out)
}

// mergeFlags are the flags of `deltaeds bootstrap --merge`.
func mergeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "merge", EnvVars: env("merge"),
			Usage: "merge into the existing bootstrap at `PATH` (YAML or JSON) instead of writing a fresh one: " +
				"adds the deltaeds cluster and ADS, converts the clusters named by --convert, --convert-matching and --cluster, " +
				"keeps the rest (node and admin included)"},
		&cli.StringSliceFlag{Name: "convert", EnvVars: env("convert"),
			Usage: "with --merge, turn the static cluster CLUSTER into an EDS cluster of a Service port, " +
				"`CLUSTER=NAMESPACE/SERVICE[/PORT]` (repeatable; comma-separated in the environment)"},
		&cli.BoolFlag{Name: "convert-matching", EnvVars: env("convert-matching"),
			Usage: "with --merge, convert every static cluster already named NAMESPACE/SERVICE[/PORT]"},
	}
}

// mergeRequested tells run to hand over to runMerge, which also refuses
// --convert and --convert-matching without --merge.
func mergeRequested(c *cli.Context) bool {
	return c.IsSet("merge") || c.IsSet("convert") || c.IsSet("convert-matching")
}
