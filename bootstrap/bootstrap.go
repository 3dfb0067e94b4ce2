package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/deltaeds/deltaeds/translate"
)

// ClusterName is the name of the static Envoy cluster that reaches deltaeds.
const ClusterName = "deltaeds"

// NodeNameMetadataKey is the node.metadata field in which Options.NodeName
// is written: the default of `deltaeds serve --node-name-metadata-key`,
// where deltaeds reads a client's Kubernetes node name.
const NodeNameMetadataKey = "deltaeds.io/node-name"

// Extension names and type URLs used in the bootstrap.
const (
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tlsTransportSocketName = "envoy.transport_sockets.tls"
)

// Defaults for Options fields left zero.
const (
	DefaultConnectTimeout    = 5 * time.Second
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
)

// Format is an output format of Marshal.
type Format string

// The formats Marshal writes.
const (
	YAML Format = "yaml"
	JSON Format = "json"
)

// ParseFormat reads a Format from its name.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case YAML, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q (want yaml or json)", s)
}

// Cluster is one Service port an Envoy should get endpoints for.
type Cluster struct {
	Namespace string
	Service   string
	// Port is the Service port's name; "" for the unnamed port.
	Port string
}

// Name is the CLA name deltaeds serves the port's endpoints under, and the
// name of the Envoy cluster: translate.ClusterName.
func (c Cluster) Name() string { return translate.ClusterName(c.Namespace, c.Service, c.Port) }

// ParseCluster reads "namespace/service" or "namespace/service/port".
func ParseCluster(s string) (Cluster, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Cluster{}, fmt.Errorf("cluster %q: want namespace/service or namespace/service/port", s)
	}
	c := Cluster{Namespace: parts[0], Service: parts[1]}
	if len(parts) == 3 {
		c.Port = parts[2]
		if c.Port == "" {
			return Cluster{}, fmt.Errorf("cluster %q: empty port name (omit the trailing slash for the unnamed port)", s)
		}
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return Cluster{}, fmt.Errorf("cluster %q: namespace %q: %s", s, c.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1035Label(c.Service); len(errs) > 0 {
		return Cluster{}, fmt.Errorf("cluster %q: service %q: %s", s, c.Service, strings.Join(errs, "; "))
	}
	if c.Port != "" {
		if errs := validation.IsValidPortName(c.Port); len(errs) > 0 {
			return Cluster{}, fmt.Errorf("cluster %q: port name %q: %s", s, c.Port, strings.Join(errs, "; "))
		}
	}
	if ns, svc, port, ok := translate.ParseClusterName(c.Name()); !ok || ns != c.Namespace || svc != c.Service || port != c.Port {
		return Cluster{}, fmt.Errorf("cluster %q: not a name deltaeds can serve", s)
	}
	return c, nil
}

// TLS secures the connection from Envoy to deltaeds. The paths are read by
// Envoy, inside its container, never by this package.
type TLS struct {
	// CAFile verifies deltaeds' serving certificate. Required.
	CAFile string
	// CertFile and KeyFile are Envoy's client certificate, for deltaeds
	// started with --tls-client-ca-file (mTLS). Both or neither.
	CertFile string
	KeyFile  string
	// ServerName is sent as SNI and required in the server certificate's
	// DNS SANs; "" means the host of Options.Server.
	ServerName string
}

// Locality is the node's locality. Envoy finds its local hosts (zone-aware
// routing) only in a CLA group whose region, zone and sub_zone all equal
// these: deltaeds' CLAs carry the zone of each endpoint, its region only
// when deltaeds serves with --node-locality, and never a sub_zone. So set
// Region exactly when deltaeds runs with --node-locality, and never SubZone
// ([Build] refuses it; [Check] reports both mismatches).
type Locality struct {
	Region, Zone, SubZone string
}

// subZoneProblem is why a node sub_zone is refused or reported.
const subZoneProblem = "node sub_zone: deltaeds' CLAs carry no sub_zone, and Envoy compares region, zone and " +
	"sub_zone together, so zone-aware routing would never find a local host; leave it unset"

// Options describe the bootstrap of one fleet of Envoys.
type Options struct {
	// Server is deltaeds' address as Envoy reaches it, host:port.
	Server string
	// Clusters are the Service ports to create EDS clusters for.
	Clusters []Cluster
	// NodeID and NodeCluster are node.id and node.cluster (Envoy's
	// --service-node and --service-cluster override them).
	NodeID      string
	NodeCluster string
	Locality    Locality
	// NodeName is the Kubernetes node the Envoy runs on, written as
	// node.metadata[NodeNameMetadataKey] when not empty: deltaeds reads it
	// there (its --node-name-metadata-key) to serve node hints,
	// internalTrafficPolicy Local and, with --zone-from-node, the zone.
	NodeName string
	// NodeNameMetadataKey is the metadata field of NodeName; "" means
	// the package's NodeNameMetadataKey.
	NodeNameMetadataKey string
	// AdminAddress is Envoy's admin listener, host:port.
	AdminAddress string
	// TLS, when not nil, secures the connection to deltaeds.
	TLS *TLS
	// ConnectTimeout is every cluster's connect_timeout (default
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// KeepaliveInterval and KeepaliveTimeout are the HTTP/2 PING settings of
	// the connection to deltaeds (defaults DefaultKeepaliveInterval and
	// DefaultKeepaliveTimeout). deltaeds must allow pings this often:
	// see its --keepalive-min-time.
	KeepaliveInterval time.Duration
	KeepaliveTimeout  time.Duration
}

// Build returns the bootstrap for opts, or an error saying which option is
// wrong. The result passes Validate.
func Build(opts Options) (*bootstrapv3.Bootstrap, error) {
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.KeepaliveInterval == 0 {
		opts.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if opts.KeepaliveTimeout == 0 {
		opts.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if opts.ConnectTimeout < time.Millisecond {
		return nil, fmt.Errorf("connect timeout %v: must be at least 1ms", opts.ConnectTimeout)
	}
	if opts.KeepaliveInterval < time.Second || opts.KeepaliveTimeout < time.Second {
		return nil, fmt.Errorf("keepalive interval %v and timeout %v: must be at least 1s", opts.KeepaliveInterval, opts.KeepaliveTimeout)
	}
	serverHost, serverPort, err := splitHostPort("server address", opts.Server, false)
	if err != nil {
		return nil, err
	}
	adminHost, adminPort, err := splitHostPort("admin address", opts.AdminAddress, true)
	if err != nil {
		return nil, err
	}
	if net.ParseIP(adminHost) == nil {
		return nil, fmt.Errorf("admin address %q: the host must be an IP address", opts.AdminAddress)
	}
	if opts.NodeID == "" || opts.NodeCluster == "" {
		return nil, errors.New("node id and node cluster must not be empty")
	}
	if opts.Locality.SubZone != "" {
		return nil, errors.New(subZoneProblem)
	}

	xdsCluster, err := deltaedsCluster(opts, serverHost, serverPort)
	if err != nil {
		return nil, err
	}
	clusters := []*clusterv3.Cluster{xdsCluster}
	seen := map[string]bool{ClusterName: true}
	for _, c := range opts.Clusters {
		name := c.Name()
		if seen[name] {
			return nil, fmt.Errorf("cluster %q given twice (or clashes with the deltaeds cluster)", name)
		}
		seen[name] = true
		clusters = append(clusters, edsCluster(name, opts.ConnectTimeout))
	}

	node := &corev3.Node{Id: opts.NodeID, Cluster: opts.NodeCluster}
	if l := opts.Locality; l != (Locality{}) {
		node.Locality = &corev3.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone}
	}
	if opts.NodeName != "" {
		key := opts.NodeNameMetadataKey
		if key == "" {
			key = NodeNameMetadataKey
		}
		node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{key: structpb.NewStringValue(opts.NodeName)}}
	}
	b := &bootstrapv3.Bootstrap{
		Node: node,
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: clusters,
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
						EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterName},
					},
				}},
				SetNodeOnFirstMessageOnly: true,
			},
		},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(adminHost, adminPort),
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("generated bootstrap is invalid: %w", err)
	}
	return b, nil
}

func deltaedsCluster(opts Options, host string, port uint32) (*clusterv3.Cluster, error) {
	h2, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
						ConnectionKeepalive: &corev3.KeepaliveSettings{
							Interval: durationpb.New(opts.KeepaliveInterval),
							Timeout:  durationpb.New(opts.KeepaliveTimeout),
						},
					},
				},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("http protocol options: %w", err)
	}
	c := &clusterv3.Cluster{
		Name: ClusterName,
		// STRICT_DNS follows the Service's address as DNS changes; for
		// a ClusterIP Service that is one address, for a headless one every
		// replica, and ADS then picks one of them.
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(opts.ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
						Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)},
					},
				}},
			}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: h2},
	}
	if opts.TLS != nil {
		ts, err := transportSocket(opts.TLS, host)
		if err != nil {
			return nil, err
		}
		c.TransportSocket = ts
	}
	return c, nil
}

func transportSocket(t *TLS, serverHost string) (*corev3.TransportSocket, error) {
	if t.CAFile == "" {
		return nil, errors.New("TLS to deltaeds needs a CA file to verify its certificate")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("a TLS client certificate needs both the certificate and the key file")
	}
	serverName := t.ServerName
	if serverName == "" {
		serverName = serverHost
	}
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: fileSource(t.CAFile),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: sanType(serverName),
					Matcher: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: serverName},
					},
				}},
			},
		},
	}
	if t.CertFile != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.CertFile),
			PrivateKey:       fileSource(t.KeyFile),
		}}
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: common}
	if net.ParseIP(serverName) == nil {
		ctx.Sni = serverName
	}
	cfg, err := anypb.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream TLS context: %w", err)
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg},
	}, nil
}

func sanType(name string) tlsv3.SubjectAltNameMatcher_SanType {
	if net.ParseIP(name) != nil {
		return tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	return tlsv3.SubjectAltNameMatcher_DNS
}

func edsCluster(name string, connectTimeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		ConnectTimeout:       durationpb.New(connectTimeout),
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			ServiceName: name,
		},
	}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(what, hostport string, allowZero bool) (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: want host:port", what, hostport)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%s %q: empty host", what, hostport)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || (port == 0 && !allowZero) {
		return "", 0, fmt.Errorf("%s %q: port must be a number in 1..65535", what, hostport)
	}
	return host, uint32(port), nil
}

// Marshal renders b as indented JSON or as YAML. Equal bootstraps give
// byte-identical output (protojson's own whitespace is not stable, so the
// JSON is re-indented; YAML keys are sorted).
func Marshal(b *bootstrapv3.Bootstrap, f Format) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("marshal bootstrap: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("compact bootstrap json: %w", err)
	}
	switch f {
	case JSON:
		var out bytes.Buffer
		if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
			return nil, fmt.Errorf("indent bootstrap json: %w", err)
		}
		out.WriteByte('\n')
		return out.Bytes(), nil
	case YAML:
		out, err := yaml.JSONToYAML(compact.Bytes())
		if err != nil {
			return nil, fmt.Errorf("convert bootstrap to yaml: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

// Unmarshal parses a bootstrap written by Marshal (or by hand, in either
// format) and validates it: ReadBootstrap for data with no file name.
func Unmarshal(data []byte) (*bootstrapv3.Bootstrap, error) {
	return ReadBootstrap("bootstrap", data)
}
