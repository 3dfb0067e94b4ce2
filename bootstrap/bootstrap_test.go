package bootstrap_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/translate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runCLI runs `deltaeds bootstrap args...` and returns stdout, the error
// and its exit code (0 without error).
//
//lint:ignore ST1008 returns what a CLI run ends with: its output, its error, then its exit code
func runCLI(t *testing.T, args ...string) (string, error, int) {
	t.Helper()
	out, _, err, code := runBootstrap(t, context.Background(), args...)
	return out, err, code
}

// decode parses the output the way Envoy would, with protojson (after YAML
// to JSON), and requires Validate to pass.
func decode(t *testing.T, out string) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatalf("yaml: %v\n%s", err, out)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("protojson: %v\n%s", err, out)
	}
	if err := b.Validate(); err != nil {
		t.Fatalf("Validate: %v\n%s", err, out)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll: %v\n%s", err, out)
	}
	return b
}

func clusterByName(t *testing.T, b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

func TestBootstrapFormats(t *testing.T) {
	args := []string{
		"--xds-server", "deltaeds.deltaeds.svc:18000",
		"--cluster", "shop/checkout/http", "--cluster", "shop/cart",
		"--node-id", "edge-1", "--node-cluster", "edge",
		"--node-region", "eu", "--node-zone", "eu-1a",
		"--envoy-admin-address", "0.0.0.0:9902",
	}
	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			out, err, _ := runCLI(t, append(args, "--format", format)...)
			if err != nil {
				t.Fatal(err)
			}
			if format == "json" && !strings.HasPrefix(out, "{\n") {
				t.Fatalf("not indented JSON:\n%s", out)
			}
			if format == "yaml" && strings.HasPrefix(out, "{") {
				t.Fatalf("not YAML:\n%s", out)
			}
			b := decode(t, out)

			if n := b.GetNode(); n.GetId() != "edge-1" || n.GetCluster() != "edge" ||
				n.GetLocality().GetRegion() != "eu" || n.GetLocality().GetZone() != "eu-1a" || n.GetLocality().GetSubZone() != "" {
				t.Errorf("node = %v", n)
			}
			ads := b.GetDynamicResources().GetAdsConfig()
			if ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
				t.Errorf("ads_config = %v", ads)
			}
			if gs := ads.GetGrpcServices(); len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() != bootstrap.ClusterName {
				t.Errorf("ads grpc_services = %v", gs)
			}
			sa := b.GetAdmin().GetAddress().GetSocketAddress()
			if sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 9902 {
				t.Errorf("admin = %v", sa)
			}

			xc := clusterByName(t, b, bootstrap.ClusterName)
			ep := xc.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if ep.GetAddress() != "deltaeds.deltaeds.svc" || ep.GetPortValue() != 18000 {
				t.Errorf("deltaeds endpoint = %v", ep)
			}
			if xc.GetTransportSocket() != nil {
				t.Errorf("unexpected transport socket without TLS flags")
			}
			hpo := &upstreamhttpv3.HttpProtocolOptions{}
			anyOpts := xc.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
			if anyOpts == nil || anyOpts.UnmarshalTo(hpo) != nil {
				t.Fatalf("HttpProtocolOptions missing: %v", xc.GetTypedExtensionProtocolOptions())
			}
			if h2 := hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions(); h2 == nil || h2.GetConnectionKeepalive().GetInterval().AsDuration() != bootstrap.DefaultKeepaliveInterval {
				t.Errorf("http2 options = %v", hpo)
			}

			for _, want := range []string{"shop/checkout/http", "shop/cart"} {
				c := clusterByName(t, b, want)
				if c.GetType() != clusterv3.Cluster_EDS {
					t.Errorf("%s: type %v", want, c.GetType())
				}
				eds := c.GetEdsClusterConfig()
				if eds.GetServiceName() != want || eds.GetEdsConfig().GetAds() == nil ||
					eds.GetEdsConfig().GetResourceApiVersion() != corev3.ApiVersion_V3 {
					t.Errorf("%s: eds_cluster_config = %v", want, eds)
				}
			}
			if got := translate.ClusterName("shop", "checkout", "http"); got != "shop/checkout/http" {
				t.Errorf("ClusterName = %q", got)
			}

			again, _, _ := runCLI(t, append(args, "--format", format)...)
			if again != out {
				t.Errorf("output is not stable:\n%s\n---\n%s", out, again)
			}
		})
	}
}

func TestBootstrapTLS(t *testing.T) {
	out, err, _ := runCLI(t, "--cluster", "a/b/c", "--xds-server", "10.0.0.1:18000",
		"--tls-ca-file", "/etc/deltaeds/ca.crt", "--tls-cert-file", "/etc/deltaeds/tls.crt",
		"--tls-key-file", "/etc/deltaeds/tls.key", "--tls-server-name", "deltaeds.deltaeds.svc")
	if err != nil {
		t.Fatal(err)
	}
	b := decode(t, out)
	ts := clusterByName(t, b, bootstrap.ClusterName).GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("transport socket = %v", ts)
	}
	utc := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(utc); err != nil {
		t.Fatal(err)
	}
	if utc.GetSni() != "deltaeds.deltaeds.svc" {
		t.Errorf("sni = %q", utc.GetSni())
	}
	cc := utc.GetCommonTlsContext()
	if certs := cc.GetTlsCertificates(); len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() != "/etc/deltaeds/tls.crt" ||
		certs[0].GetPrivateKey().GetFilename() != "/etc/deltaeds/tls.key" {
		t.Errorf("tls_certificates = %v", certs)
	}
	vc := cc.GetValidationContext()
	if vc.GetTrustedCa().GetFilename() != "/etc/deltaeds/ca.crt" || len(vc.GetMatchTypedSubjectAltNames()) != 1 ||
		vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "deltaeds.deltaeds.svc" {
		t.Errorf("validation_context = %v", vc)
	}

	// CA only: server verification without a client certificate; the SAN
	// defaults to the server's host.
	out, err, _ = runCLI(t, "--cluster", "a/b", "--xds-server", "deltaeds.x.svc:443", "--tls-ca-file", "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	b = decode(t, out)
	if err := clusterByName(t, b, bootstrap.ClusterName).GetTransportSocket().GetTypedConfig().UnmarshalTo(utc); err != nil {
		t.Fatal(err)
	}
	if utc.GetSni() != "deltaeds.x.svc" || len(utc.GetCommonTlsContext().GetTlsCertificates()) != 0 {
		t.Errorf("CA-only TLS context = %v", utc)
	}
}

func TestBootstrapFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no cluster", nil, "at least one --cluster"},
		{"cluster without service", []string{"--cluster", "shop"}, "want namespace/service"},
		{"cluster too long", []string{"--cluster", "a/b/c/d"}, "want namespace/service"},
		{"cluster trailing slash", []string{"--cluster", "a/b/"}, "empty port name"},
		{"bad namespace", []string{"--cluster", "Shop/b"}, "namespace"},
		{"bad service", []string{"--cluster", "a/1b"}, "service"},
		{"bad port", []string{"--cluster", "a/b/this-port-name-is-too-long"}, "port name"},
		{"duplicate cluster", []string{"--cluster", "a/b", "--cluster", "a/b"}, "given twice"},
		{"bad format", []string{"--cluster", "a/b", "--format", "toml"}, "unknown format"},
		{"server without port", []string{"--cluster", "a/b", "--xds-server", "deltaeds"}, "want host:port"},
		{"server port zero", []string{"--cluster", "a/b", "--xds-server", "deltaeds:0"}, "port must be"},
		{"admin not an IP", []string{"--cluster", "a/b", "--envoy-admin-address", "localhost:9901"}, "must be an IP"},
		{"empty node id", []string{"--cluster", "a/b", "--node-id", ""}, "node id"},
		{"tls without CA", []string{"--cluster", "a/b", "--tls-cert-file", "c", "--tls-key-file", "k"}, "need --tls-ca-file"},
		{"cert without key", []string{"--cluster", "a/b", "--tls-ca-file", "ca", "--tls-cert-file", "c"}, "go together"},
		{"bad duration", []string{"--cluster", "a/b", "--connect-timeout", "soon"}, "invalid value"},
		{"zero connect timeout", []string{"--cluster", "a/b", "--connect-timeout", "0s"}, "must be positive"},
		{"unknown flag", []string{"--cluster", "a/b", "--nope"}, "flag provided but not defined"},
		{"positional argument", []string{"--cluster", "a/b", "extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err, code := runCLI(t, tt.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if code != bootstrap.ExitUsage {
				t.Errorf("exit code %d, want %d (%v)", code, bootstrap.ExitUsage, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if out != "" {
				t.Errorf("wrote output despite the error:\n%s", out)
			}
		})
	}
}

func TestBootstrapEnvAndOutputFile(t *testing.T) {
	t.Setenv("DELTAEDS_BOOTSTRAP_CLUSTER", "a/b/http,c/d")
	t.Setenv("DELTAEDS_BOOTSTRAP_FORMAT", "json")
	path := filepath.Join(t.TempDir(), "envoy.json")
	out, err, _ := runCLI(t, "-o", path)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		t.Errorf("wrote to stdout with --output: %q", out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := decode(t, string(data))
	clusterByName(t, b, "a/b/http")
	clusterByName(t, b, "c/d")

	// A bad environment value is a usage error too.
	t.Setenv("DELTAEDS_BOOTSTRAP_CONNECT_TIMEOUT", "forever")
	if _, err, code := runCLI(t); err == nil || code != bootstrap.ExitUsage {
		t.Errorf("bad env duration: err %v code %d", err, code)
	}
}

func TestUnmarshalRejectsInvalid(t *testing.T) {
	b, err := bootstrap.Build(bootstrap.Options{
		Server: "x:1", AdminAddress: "127.0.0.1:0", NodeID: "n", NodeCluster: "c",
		Clusters: []bootstrap.Cluster{{Namespace: "a", Service: "b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := bootstrap.Marshal(b, bootstrap.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bootstrap.Unmarshal(data); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	bad := strings.Replace(string(data), "DELTA_GRPC", "NO_SUCH_API", 1)
	if _, err := bootstrap.Unmarshal([]byte(bad)); err == nil {
		t.Error("an unknown enum value was accepted")
	}
	bad = strings.Replace(string(data), "connect_timeout: 5s", "connect_timeout: -5s", 1)
	if _, err := bootstrap.Unmarshal([]byte(bad)); err == nil {
		t.Error("a negative connect_timeout passed Validate")
	}
}
