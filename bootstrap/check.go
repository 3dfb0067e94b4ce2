package bootstrap

import (
	"fmt"
	"sort"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// DefaultServeKeepaliveMinTime is `deltaeds serve`'s default
// --keepalive-min-time: the shortest interval between client pings it
// accepts before closing the connection (GOAWAY too_many_pings).
const DefaultServeKeepaliveMinTime = 10 * time.Second

// CheckOptions say what a bootstrap is checked against.
type CheckOptions struct {
	// Published, when not nil, are the names deltaeds serves (from the
	// cluster): every EDS cluster fed by ADS must ask for one of them.
	Published []string
	// KeepaliveMinTime is the serving deltaeds' --keepalive-min-time
	// (default DefaultServeKeepaliveMinTime).
	KeepaliveMinTime time.Duration
	// NodeLocality says the serving deltaeds runs with --node-locality, so
	// its CLAs carry regions: the node must then declare its region, and
	// must not otherwise.
	NodeLocality bool
}

// Finding is one problem Check found, with the field it is about.
type Finding struct {
	// Where names the bootstrap field, e.g. "static_resources.clusters[shop/web/http]".
	Where   string
	Message string
}

func (f Finding) String() string { return f.Where + ": " + f.Message }

// Check lints a bootstrap meant to get endpoints from deltaeds: the ADS
// source is Delta gRPC through a static cluster that speaks HTTP/2 and pings
// no faster than deltaeds allows, and every EDS cluster fed by ADS asks for a
// name deltaeds publishes (with suggestions for the near misses). It returns
// the findings sorted by field; none means the bootstrap is fine.
func Check(b *bootstrapv3.Bootstrap, opts CheckOptions) []Finding {
	if opts.KeepaliveMinTime <= 0 {
		opts.KeepaliveMinTime = DefaultServeKeepaliveMinTime
	}
	var out []Finding
	add := func(where, format string, args ...any) {
		out = append(out, Finding{Where: where, Message: fmt.Sprintf(format, args...)})
	}
	checkLocality(b.GetNode().GetLocality(), opts.NodeLocality, add)
	clusters := make(map[string]*clusterv3.Cluster)
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}

	ads := b.GetDynamicResources().GetAdsConfig()
	switch {
	case ads == nil:
		add("dynamic_resources.ads_config", "missing: deltaeds serves EDS over ADS only")
	case ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC:
		add("dynamic_resources.ads_config.api_type", "is %s, must be DELTA_GRPC: deltaeds serves only incremental xDS", ads.GetApiType())
	}
	if ads != nil {
		checkADSCluster(ads, clusters, opts.KeepaliveMinTime, add)
	}

	published := make(map[string]bool, len(opts.Published))
	for _, n := range opts.Published {
		published[n] = true
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		where := fmt.Sprintf("static_resources.clusters[%s]", c.GetName())
		eds := c.GetEdsClusterConfig().GetEdsConfig()
		if eds.GetAds() == nil {
			add(where+".eds_cluster_config.eds_config", "is not ads: {}; this cluster does not get its endpoints from deltaeds")
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if _, _, _, ok := translate.ParseClusterName(name); !ok {
			add(where, "asks for %q, which is not a name deltaeds can publish (NAMESPACE/SERVICE[/PORT])", name)
			continue
		}
		if opts.Published != nil && !published[name] {
			msg := fmt.Sprintf("asks for %q, which deltaeds does not publish: Envoy will route nothing to it", name)
			if near := xds.Closest(name, opts.Published, 3); len(near) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			add(where, "%s", msg)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Where < out[j].Where })
	return out
}

// checkLocality checks that the node's locality can equal the localities of
// deltaeds' CLAs: Envoy's zone-aware routing finds local hosts only in a
// group whose region, zone and sub_zone all equal the node's
// (source/common/upstream/upstream_impl.cc,
// PriorityStateManager::updateClusterPrioritySet; envoysim.LocalHosts
// models it). Envoy's --service-zone can set the zone at run time, so only
// region and sub_zone are checked.
func checkLocality(l *corev3.Locality, nodeLocality bool, add func(string, string, ...any)) {
	if l.GetSubZone() != "" {
		add("node.locality.sub_zone", "%s", subZoneProblem)
	}
	switch {
	case l.GetRegion() != "" && !nodeLocality:
		add("node.locality.region", "is %q, but deltaeds' CLAs carry a region only under serve --node-locality (pass --node-locality here if it runs so): "+
			"Envoy compares region and zone together, so zone-aware routing would never find a local host", l.GetRegion())
	case l.GetRegion() == "" && l.GetZone() != "" && nodeLocality:
		add("node.locality.region", "is unset, but under --node-locality deltaeds' CLAs carry each endpoint's region: "+
			"Envoy compares region and zone together, so zone-aware routing would never find a local host")
	}
}

// checkADSCluster checks the static cluster the ADS source goes through.
func checkADSCluster(ads *corev3.ApiConfigSource, clusters map[string]*clusterv3.Cluster, minPing time.Duration, add func(string, string, ...any)) {
	services := ads.GetGrpcServices()
	if len(services) == 0 {
		add("dynamic_resources.ads_config.grpc_services", "missing: name the cluster that reaches deltaeds")
		return
	}
	g := services[0].GetEnvoyGrpc()
	if g == nil {
		return // google_grpc speaks HTTP/2 by itself
	}
	name := g.GetClusterName()
	c := clusters[name]
	if c == nil {
		add("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name", "names %q, which is not a static cluster", name)
		return
	}
	where := fmt.Sprintf("static_resources.clusters[%s]", name)
	h2 := http2Options(c)
	if h2 == nil {
		add(where+".typed_extension_protocol_options", "the cluster reaching deltaeds must speak HTTP/2 (envoy.extensions.upstreams.http.v3.HttpProtocolOptions with explicit_http_config.http2_protocol_options)")
		return
	}
	if iv := h2.GetConnectionKeepalive().GetInterval(); iv != nil && iv.AsDuration() < minPing {
		add(where+".http2_protocol_options.connection_keepalive.interval",
			"is %s, shorter than deltaeds' --keepalive-min-time %s: deltaeds closes connections that ping this often", iv.AsDuration(), minPing)
	}
}

// http2Options returns the HTTP/2 options of a cluster that speaks HTTP/2,
// or nil.
func http2Options(c *clusterv3.Cluster) *corev3.Http2ProtocolOptions {
	if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		var o upstreamhttpv3.HttpProtocolOptions
		if a.UnmarshalTo(&o) == nil {
			if h2 := o.GetExplicitHttpConfig().GetHttp2ProtocolOptions(); h2 != nil {
				return h2
			}
		}
	}
	//lint:ignore SA1019 the deprecated field still makes Envoy speak HTTP/2
	return c.GetHttp2ProtocolOptions()
}
