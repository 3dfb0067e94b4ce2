package bootstrap_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/bootstrap"
)

// -update regenerates the golden files under testdata/merge. Another test
// file of the package may register the flag too: only the first does.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files under testdata/")
	}
}

func updateGoldens() bool {
	f := flag.Lookup("update")
	if f == nil {
		return false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	b, _ := g.Get().(bool)
	return b
}

func readBootstrapFile(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bootstrap.ReadBootstrap(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMergeGolden merges each testdata/merge/CASE/input.{yaml,json} with the
// flags in CASE/args (one a line) and compares the output with
// CASE/want.{yaml,json} (-update rewrites it).
func TestMergeGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "merge", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			argData, err := os.ReadFile(filepath.Join(dir, "args"))
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Split(strings.TrimSpace(string(argData)), "\n")
			ext := "yaml"
			for i, a := range args {
				if a == "--format" && i+1 < len(args) {
					ext = args[i+1]
				}
			}
			input, _ := filepath.Glob(filepath.Join(dir, "input.*"))
			if len(input) != 1 {
				t.Fatalf("want one input file, have %v", input)
			}
			out, err, _ := runCLI(t, append(args, "--merge", input[0])...)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join(dir, "want."+ext)
			if updateGoldens() {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./bootstrap/ -run TestMergeGolden -update)", err)
			}
			if out != string(want) {
				t.Errorf("output differs from %s (go test ./bootstrap/ -run TestMergeGolden -update rewrites it):\n%s", golden, out)
			}

			in := readBootstrapFile(t, input[0])
			merged, err := bootstrap.ReadBootstrap("output", []byte(out))
			if err != nil {
				t.Fatal(err)
			}
			if err := merged.ValidateAll(); err != nil {
				t.Fatalf("ValidateAll: %v", err)
			}
			checkMerged(t, in, merged, args)

			// Merging again changes nothing.
			tmp := filepath.Join(t.TempDir(), "merged."+ext)
			if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			again, err, _ := runCLI(t, append(args, "--merge", tmp)...)
			if err != nil {
				t.Fatalf("merging the output again: %v", err)
			}
			if again != out {
				t.Errorf("merging the output again changed it:\n%s", again)
			}
		})
	}
}

// checkMerged checks what Merge promises: ADS is deltaeds' over DELTA_GRPC,
// the deltaeds cluster is the fresh bootstrap's, every input cluster is
// still there in the same order, converted ones differ only in type,
// eds_cluster_config and load_assignment, and everything else is
// proto-equal to the input.
func checkMerged(t *testing.T, in, out *bootstrapv3.Bootstrap, args []string) {
	t.Helper()
	ads := out.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType().String() != "DELTA_GRPC" || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != bootstrap.ClusterName {
		t.Errorf("ads_config is not deltaeds' Delta ADS: %v", ads)
	}
	outClusters := out.GetStaticResources().GetClusters()
	byName := map[string]*clusterv3.Cluster{}
	for _, c := range outClusters {
		byName[c.GetName()] = c
	}
	for i, c := range in.GetStaticResources().GetClusters() {
		if outClusters[i].GetName() != c.GetName() {
			t.Errorf("cluster %d is %q, was %q: the order changed", i, outClusters[i].GetName(), c.GetName())
		}
		if c.GetName() == bootstrap.ClusterName {
			continue
		}
		a, b := proto.Clone(c).(*clusterv3.Cluster), proto.Clone(byName[c.GetName()]).(*clusterv3.Cluster)
		for _, x := range []*clusterv3.Cluster{a, b} {
			x.ClusterDiscoveryType, x.EdsClusterConfig, x.LoadAssignment = nil, nil, nil
		}
		if !proto.Equal(a, b) {
			t.Errorf("cluster %q: a setting other than type, eds_cluster_config or load_assignment changed:\nin:  %v\nout: %v", c.GetName(), a, b)
		}
	}
	dc := byName[bootstrap.ClusterName]
	if dc == nil || dc.GetType() != clusterv3.Cluster_STRICT_DNS || len(dc.GetTypedExtensionProtocolOptions()) != 1 {
		t.Errorf("deltaeds cluster: %v", dc)
	}
	for i, a := range args {
		if a != "--convert" && a != "--cluster" {
			continue
		}
		name, to, _ := strings.Cut(args[i+1], "=")
		if to == "" {
			to = name
		}
		c := byName[name]
		if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || c.GetLoadAssignment() != nil {
			t.Errorf("cluster %q is not an EDS cluster fed by ADS: %v", name, c)
		}
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != to && (sn != "" || to != name) {
			t.Errorf("cluster %q: service_name %q, want %q", name, sn, to)
		}
	}

	a, b := proto.Clone(in).(*bootstrapv3.Bootstrap), proto.Clone(out).(*bootstrapv3.Bootstrap)
	for _, x := range []*bootstrapv3.Bootstrap{a, b} {
		if x.StaticResources != nil {
			x.StaticResources.Clusters = nil
			if proto.Equal(x.StaticResources, &bootstrapv3.Bootstrap_StaticResources{}) {
				x.StaticResources = nil
			}
		}
		if x.DynamicResources != nil {
			x.DynamicResources.AdsConfig = nil
			if proto.Equal(x.DynamicResources, &bootstrapv3.Bootstrap_DynamicResources{}) {
				x.DynamicResources = nil
			}
		}
	}
	if !proto.Equal(a, b) {
		t.Errorf("the merge changed something besides clusters and ads_config:\nin:  %v\nout: %v", a, b)
	}
}

// refusalBase is a valid bootstrap; each refusal case adds one cluster
// (CLUSTER) and sometimes dynamic_resources (DYNAMIC).
const refusalBase = `
node: {id: node, cluster: front}
DYNAMIC
static_resources:
  clusters:
  - name: ok
    type: STATIC
    connect_timeout: 1s
CLUSTER
`

func TestMergeRefusals(t *testing.T) {
	tests := []struct {
		name     string
		cluster  string // YAML of one more cluster, indented as a list item
		dynamic  string
		opts     bootstrap.MergeOptions
		want     string
		unparsed bool // ReadBootstrap, not Merge, refuses it
	}{
		{
			name: "named cluster missing",
			opts: convertOpts("nope=shop/nope"),
			want: `cluster "nope" (--convert nope=shop/nope): no static cluster of that name in the bootstrap`,
		},
		{
			name:    "aggregate cluster",
			cluster: "  - {name: agg, connect_timeout: 1s, lb_policy: CLUSTER_PROVIDED, cluster_type: {name: envoy.clusters.aggregate, typed_config: {'@type': type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig, clusters: [ok]}}}",
			opts:    convertOpts("agg=shop/agg"),
			want:    `cluster "agg" (--convert agg=shop/agg): cluster_type "envoy.clusters.aggregate": a custom cluster`,
		},
		{
			name:    "dns lookup family",
			cluster: "  - {name: dns, type: STRICT_DNS, connect_timeout: 1s, dns_lookup_family: V4_ONLY}",
			opts:    convertOpts("dns=shop/dns/http"),
			want:    `cluster "dns" (--convert dns=shop/dns/http): dns_lookup_family: a DNS setting EDS would ignore`,
		},
		{
			name:    "dns refresh rate",
			cluster: "  - {name: dns, type: LOGICAL_DNS, connect_timeout: 1s, dns_refresh_rate: 10s}",
			opts:    convertOpts("dns=shop/dns/http"),
			want:    `cluster "dns" (--convert dns=shop/dns/http): dns_refresh_rate: a DNS setting`,
		},
		{
			name:    "respect dns ttl",
			cluster: "  - {name: dns, type: STRICT_DNS, connect_timeout: 1s, respect_dns_ttl: true}",
			opts:    convertOpts("dns=shop/dns/http"),
			want:    `dns=shop/dns/http): respect_dns_ttl: a DNS setting`,
		},
		{
			name:    "typed dns resolver",
			cluster: "  - {name: dns, type: STRICT_DNS, connect_timeout: 1s, typed_dns_resolver_config: {name: envoy.network.dns_resolver.cares, typed_config: {'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig}}}",
			opts:    convertOpts("dns=shop/dns/http"),
			want:    `dns=shop/dns/http): typed_dns_resolver_config: a DNS setting`,
		},
		{
			name:    "original dst",
			cluster: "  - {name: odst, type: ORIGINAL_DST, connect_timeout: 1s, lb_policy: CLUSTER_PROVIDED}",
			opts:    convertOpts("odst=shop/odst"),
			want:    `cluster "odst" (--convert odst=shop/odst): type ORIGINAL_DST:`,
		},
		{
			name:    "cluster provided lb",
			cluster: "  - {name: cp, type: STATIC, connect_timeout: 1s, lb_policy: CLUSTER_PROVIDED}",
			opts:    convertOpts("cp=shop/cp"),
			want:    `cluster "cp" (--convert cp=shop/cp): lb_policy CLUSTER_PROVIDED`,
		},
		{
			name:    "load assignment policy",
			cluster: "  - {name: la, type: STATIC, connect_timeout: 1s, load_assignment: {cluster_name: la, policy: {overprovisioning_factor: 200}}}",
			opts:    convertOpts("la=shop/la"),
			want:    `cluster "la" (--convert la=shop/la): load_assignment.policy:`,
		},
		{
			name:    "eds from a file",
			cluster: "  - {name: eds, type: EDS, connect_timeout: 1s, eds_cluster_config: {eds_config: {path_config_source: {path: /etc/envoy/eds.yaml}}}}",
			opts:    convertOpts("eds=shop/eds"),
			want:    `cluster "eds" (--convert eds=shop/eds): type EDS: eds_cluster_config.eds_config is the file /etc/envoy/eds.yaml, not ADS`,
		},
		{
			name:    "eds from another grpc server",
			cluster: "  - {name: eds, type: EDS, connect_timeout: 1s, eds_cluster_config: {eds_config: {api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: ok}}]}}}}",
			opts:    convertOpts("eds=shop/eds"),
			want:    `type EDS: eds_cluster_config.eds_config is an api_config_source (GRPC) through cluster "ok", not ADS`,
		},
		{
			name:    "matching cluster eds from self",
			cluster: "  - {name: shop/eds, type: EDS, connect_timeout: 1s, eds_cluster_config: {eds_config: {self: {}}}}",
			opts:    bootstrap.MergeOptions{Options: mergeBase(), ConvertMatching: true},
			want:    `cluster "shop/eds" (--convert-matching): type EDS: eds_cluster_config.eds_config is self`,
		},
		{
			name:    "conflicting targets",
			cluster: "  - {name: shop/a, type: STATIC, connect_timeout: 1s}",
			opts: func() bootstrap.MergeOptions {
				o := convertOpts("shop/a=shop/b")
				o.Clusters = []bootstrap.Cluster{{Namespace: "shop", Service: "a"}}
				return o
			}(),
			want: `cluster "shop/a": --convert shop/a=shop/b asks for "shop/b" but --cluster shop/a for "shop/a"`,
		},
		{
			name:    "duplicate cluster",
			cluster: "  - {name: ok, type: STATIC, connect_timeout: 2s}",
			opts:    convertOpts("ok=shop/ok"),
			want:    `static_resources.clusters: cluster "ok" defined twice`,
		},
		{
			name:    "eds cluster on another ads server",
			cluster: "  - {name: other, type: EDS, connect_timeout: 1s, eds_cluster_config: {eds_config: {ads: {}}}}",
			dynamic: "dynamic_resources: {ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: ok}}]}}",
			opts:    convertOpts("ok=shop/ok"),
			want:    `cluster "other": eds_cluster_config.eds_config gets endpoints over ADS from ok; the merge would move it to deltaeds`,
		},
		{
			name:    "lds over ads",
			dynamic: "dynamic_resources: {lds_config: {ads: {}, resource_api_version: V3}, ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: ok}}]}}",
			opts:    convertOpts("ok=shop/ok"),
			want:    `bootstrap.dynamic_resources.lds_config uses ADS, which the merge points at deltaeds; deltaeds serves only endpoints`,
		},
		{
			name:    "sds over ads in a transport socket",
			cluster: "  - {name: tls, type: STATIC, connect_timeout: 1s, transport_socket: {name: envoy.transport_sockets.tls, typed_config: {'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {tls_certificate_sds_secret_configs: [{name: cert, sds_config: {ads: {}, resource_api_version: V3}}]}}}}",
			opts:    convertOpts("ok=shop/ok"),
			want:    `cluster "tls".transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config uses ADS`,
		},
		{
			name:     "unknown field",
			cluster:  "  - {name: x, type: STATIC, connect_timeout: 1s, no_such_field: 1}",
			want:     `refusal.yaml: not an envoy.config.bootstrap.v3.Bootstrap: unknown field "no_such_field"`,
			unparsed: true,
		},
		{
			name:     "unknown extension type",
			cluster:  "  - {name: x, type: STATIC, connect_timeout: 1s, transport_socket: {name: x, typed_config: {'@type': type.googleapis.com/no.such.Type}}}",
			want:     `refusal.yaml: not an envoy.config.bootstrap.v3.Bootstrap: unable to resolve "type.googleapis.com/no.such.Type"`,
			unparsed: true,
		},
		{
			name:     "duplicate key",
			cluster:  "  - {name: x, name: y, type: STATIC, connect_timeout: 1s}",
			want:     `refusal.yaml: parse:`,
			unparsed: true,
		},
		{
			name:     "invalid bootstrap",
			cluster:  "  - {name: x, type: STATIC, connect_timeout: -1s}",
			want:     `refusal.yaml: invalid bootstrap: invalid Bootstrap.StaticResources`,
			unparsed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(strings.Replace(refusalBase, "CLUSTER", tt.cluster, 1), "DYNAMIC", tt.dynamic, 1)
			b, err := bootstrap.ReadBootstrap("refusal.yaml", []byte(src))
			if tt.unparsed {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("ReadBootstrap error %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			before := proto.Clone(b)
			out, err := bootstrap.Merge(b, tt.opts)
			if err == nil {
				t.Fatalf("no error; merged:\n%v", out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
			if out != nil {
				t.Error("returned a bootstrap with the error")
			}
			if !proto.Equal(before, b) {
				t.Error("Merge modified its input")
			}
		})
	}
}

func mergeBase() bootstrap.Options {
	return bootstrap.Options{Server: "deltaeds.deltaeds.svc:18000"}
}

func convertOpts(convert ...string) bootstrap.MergeOptions {
	o := bootstrap.MergeOptions{Options: mergeBase()}
	for _, s := range convert {
		cv, err := bootstrap.ParseConversion(s)
		if err != nil {
			panic(err)
		}
		o.Convert = append(o.Convert, cv)
	}
	return o
}

func TestParseConversion(t *testing.T) {
	good := map[string]bootstrap.Conversion{
		"backend=shop/backend/http": {From: "backend", To: bootstrap.Cluster{Namespace: "shop", Service: "backend", Port: "http"}},
		" a = shop/b ":              {From: "a", To: bootstrap.Cluster{Namespace: "shop", Service: "b"}},
		"x/y/z=shop/b":              {From: "x/y/z", To: bootstrap.Cluster{Namespace: "shop", Service: "b"}},
	}
	for s, want := range good {
		if got, err := bootstrap.ParseConversion(s); err != nil || got != want {
			t.Errorf("ParseConversion(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	bad := map[string]string{
		"backend":                 "want CLUSTER=NAMESPACE/SERVICE[/PORT]",
		"=shop/b":                 "want CLUSTER=NAMESPACE/SERVICE[/PORT]",
		"backend=":                "want CLUSTER=NAMESPACE/SERVICE[/PORT]",
		"backend=shop":            `--convert "backend=shop": cluster "shop": want namespace/service`,
		"backend=shop/b/":         "empty port name",
		"backend=Shop/b":          `namespace "Shop"`,
		"backend=shop/1b":         `service "1b"`,
		"backend=shop/b/a_port":   `port name "a_port"`,
		"backend=a/b/c/d":         "want namespace/service",
		"deltaeds=shop/b":         "the cluster that reaches deltaeds",
		"backend=shop/b/http=foo": `port name "http=foo"`,
	}
	for s, want := range bad {
		if _, err := bootstrap.ParseConversion(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConversion(%q): error %v, want one containing %q", s, err, want)
		}
	}
}

// TestMergeMinimal: a bootstrap with neither static nor dynamic resources
// gets both, and the result equals what Build makes for the same flags
// apart from node and admin.
func TestMergeMinimal(t *testing.T) {
	in, err := bootstrap.ReadBootstrap("min.yaml", []byte("node: {id: node, cluster: front}\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := bootstrap.Options{Server: "x:1", Clusters: []bootstrap.Cluster{{Namespace: "a", Service: "b", Port: "p"}},
		NodeID: "node", NodeCluster: "front", AdminAddress: "127.0.0.1:1"}
	got, err := bootstrap.Merge(in, bootstrap.MergeOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	want, err := bootstrap.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	want.Admin = nil
	if !proto.Equal(got, want) {
		t.Errorf("merged:\n%v\nwant:\n%v", got, want)
	}
	// And merging a fresh bootstrap changes nothing.
	fresh, _ := bootstrap.Build(opts)
	again, err := bootstrap.Merge(fresh, bootstrap.MergeOptions{Options: opts, ConvertMatching: true})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(again, fresh) {
		t.Errorf("merging a fresh bootstrap changed it:\n%v", again)
	}
}

// TestMergeCommandErrors: refusals and flag errors write nothing, name the
// file and the cluster, and leave an existing --output file as it was.
func TestMergeCommandErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(good, []byte("node: {id: node, cluster: front}\nstatic_resources:\n  clusters:\n  - {name: web, type: STRICT_DNS, connect_timeout: 1s, dns_lookup_family: V4_ONLY}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("node: {id: node, cluster: front, colour: blue}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"convert without merge", []string{"--cluster", "a/b", "--convert", "web=shop/web"}, "--convert and --convert-matching need --merge FILE", bootstrap.ExitUsage},
		{"convert-matching without merge", []string{"--convert-matching"}, "need --merge FILE", bootstrap.ExitUsage},
		{"node flag with merge", []string{"--merge", good, "--node-id", "x"}, "--node-id: with --merge the bootstrap keeps its own node", bootstrap.ExitUsage},
		{"admin flag with merge", []string{"--merge", good, "--envoy-admin-address", "127.0.0.1:1"}, "--envoy-admin-address: with --merge", bootstrap.ExitUsage},
		{"bad convert", []string{"--merge", good, "--convert", "web"}, `--convert "web": want CLUSTER=`, bootstrap.ExitUsage},
		{"bad convert target", []string{"--merge", good, "--convert", "web=shop/Web"}, `service "Web"`, bootstrap.ExitUsage},
		{"bad server", []string{"--merge", good, "--xds-server", "x"}, "want host:port", bootstrap.ExitUsage},
		{"missing file", []string{"--merge", filepath.Join(dir, "nope.yaml")}, "nope.yaml: no such file", 1},
		{"unknown field", []string{"--merge", unknown}, `unknown.yaml: not an envoy.config.bootstrap.v3.Bootstrap: unknown field "colour"`, 1},
		{"refused cluster", []string{"--merge", good, "--convert", "web=shop/web/http"}, good + `: cluster "web" (--convert web=shop/web/http): dns_lookup_family`, 1},
		{"missing cluster", []string{"--merge", good, "--convert", "api=shop/api"}, `cluster "api" (--convert api=shop/api): no static cluster of that name`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out.yaml")
			if err := os.WriteFile(dest, []byte("previous\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err, code := runCLI(t, append(tt.args, "-o", dest)...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d (%v)", code, tt.code, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if out != "" {
				t.Errorf("wrote to stdout: %s", out)
			}
			if data, _ := os.ReadFile(dest); string(data) != "previous\n" {
				t.Errorf("--output file changed to %q", data)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dest), ".bootstrap-*")); len(left) > 0 {
				t.Errorf("left temporary files %v", left)
			}
		})
	}
}

// TestMergeInPlace: --output may name the --merge file itself.
func TestMergeInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envoy.json")
	if err := os.WriteFile(path, []byte(`{"node": {"id": "node", "cluster": "front"}, "static_resources": {"clusters": [{"name": "web", "type": "STATIC", "connect_timeout": "1s"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err, _ := runCLI(t, "--merge", path, "-o", path, "--format", "json", "--convert", "web=shop/web/http"); err != nil {
		t.Fatal(err)
	}
	b := readBootstrapFile(t, path)
	if c := b.GetStaticResources().GetClusters()[0]; c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetServiceName() != "shop/web/http" {
		t.Errorf("web not converted: %v", c)
	}
}
