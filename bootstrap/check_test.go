package bootstrap

import (
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestCheck: one case per rule; each starts from a bootstrap `deltaeds bootstrap` writes for
// shop/web/http and shop/api/http, which passes, and breaks one thing.
func TestCheck(t *testing.T) {
	published := []string{"shop/web/http", "shop/api/http", "shop/web/metrics"}
	tests := []struct {
		name      string
		published []string // nil: the names are not checked
		minPing   time.Duration
		mutate    func(b *bootstrapv3.Bootstrap)
		want      []string // substrings of the findings, in order
	}{
		{name: "a bootstrap deltaeds wrote passes", published: published},
		{name: "names are not checked without a cluster", mutate: func(b *bootstrapv3.Bootstrap) {
			edsClusterNamed(b, "shop/web/http").EdsClusterConfig.ServiceName = "shop/web/https"
		}},
		{name: "a typo is found, with suggestions", published: published, mutate: func(b *bootstrapv3.Bootstrap) {
			edsClusterNamed(b, "shop/web/http").EdsClusterConfig.ServiceName = "shop/web/https"
		}, want: []string{`clusters[shop/web/http]: asks for "shop/web/https", which deltaeds does not publish: Envoy will route nothing to it (did you mean ["shop/web/http" "shop/api/http" "shop/web/metrics"]?)`}},
		{name: "the cluster name is the service name when none is set", published: published, mutate: func(b *bootstrapv3.Bootstrap) {
			c := edsClusterNamed(b, "shop/api/http")
			c.Name, c.EdsClusterConfig.ServiceName = "shop/api/grpc", ""
		}, want: []string{`clusters[shop/api/grpc]: asks for "shop/api/grpc"`}},
		{name: "a name deltaeds cannot publish", published: published, mutate: func(b *bootstrapv3.Bootstrap) {
			edsClusterNamed(b, "shop/api/http").EdsClusterConfig.ServiceName = "api"
		}, want: []string{`asks for "api", which is not a name deltaeds can publish`}},
		{name: "state of the world", mutate: func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.AdsConfig.ApiType = corev3.ApiConfigSource_GRPC
		}, want: []string{"ads_config.api_type: is GRPC, must be DELTA_GRPC"}},
		{name: "no ADS", mutate: func(b *bootstrapv3.Bootstrap) { b.DynamicResources = nil },
			want: []string{"dynamic_resources.ads_config: missing"}},
		{name: "ADS through a cluster that does not exist", mutate: func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.AdsConfig.GrpcServices[0].GetEnvoyGrpc().ClusterName = "xds"
		}, want: []string{`names "xds", which is not a static cluster`}},
		{name: "ADS cluster without HTTP/2", mutate: func(b *bootstrapv3.Bootstrap) {
			edsClusterNamed(b, ClusterName).TypedExtensionProtocolOptions = nil
		}, want: []string{"clusters[deltaeds].typed_extension_protocol_options: the cluster reaching deltaeds must speak HTTP/2"}},
		{name: "pings faster than deltaeds allows", minPing: time.Minute,
			want: []string{"connection_keepalive.interval: is 30s, shorter than deltaeds' --keepalive-min-time 1m0s"}},
		{name: "an EDS cluster not fed by ADS", mutate: func(b *bootstrapv3.Bootstrap) {
			edsClusterNamed(b, "shop/api/http").EdsClusterConfig.EdsConfig = &corev3.ConfigSource{
				//lint:ignore SA1019 the deprecated form existing bootstraps still use
				ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/eds.yaml"}}
		}, want: []string{"clusters[shop/api/http].eds_cluster_config.eds_config: is not ads"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(Options{Server: "deltaeds:18000", NodeID: DefaultNodeID, NodeCluster: DefaultNodeCluster, AdminAddress: DefaultAdminAddress, Clusters: []Cluster{
				{Namespace: "shop", Service: "web", Port: "http"}, {Namespace: "shop", Service: "api", Port: "http"}}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.mutate != nil {
				tt.mutate(b)
			}
			got := Check(b, CheckOptions{Published: tt.published, KeepaliveMinTime: tt.minPing})
			if len(got) != len(tt.want) {
				t.Fatalf("findings %q, want %d", got, len(tt.want))
			}
			for i, f := range got {
				if !strings.Contains(f.String(), tt.want[i]) {
					t.Errorf("finding %d = %q, want it to contain %q", i, f, tt.want[i])
				}
			}
		})
	}
}

func edsClusterNamed(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	panic("no cluster " + name)
}
