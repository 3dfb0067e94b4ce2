package helm_test

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite chart/files/prometheusrule.yaml from deploy/monitoring/prometheusrule.yaml")

const (
	ruleSource = "../monitoring/prometheusrule.yaml"
	ruleCopy   = "chart/files/prometheusrule.yaml"
)

// inBase reports whether the chart renders an object of the base: every deltaeds object but the
// Namespace (a Helm release's namespace exists before the release: `helm install
// --create-namespace`, or created with the base's Pod Security labels, see the README) and the
// example Envoy (envoy-*), which is not deltaeds'.
func inBase(u *unstructured.Unstructured) bool {
	return u.GetKind() != "Namespace" && !strings.HasPrefix(u.GetName(), "envoy-")
}

// sortArgs sorts the container args in place: the order of `deltaeds serve`'s flags carries no
// meaning (urfave/cli; a repeated --namespace is a set), and Helm renders them by value name.
func sortArgs(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range containers {
		c := c.(map[string]any)
		a, ok := c["args"].([]any)
		if !ok {
			continue
		}
		sort.Slice(a, func(i, j int) bool { return a[i].(string) < a[j].(string) })
	}
	if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
}

// TestChartMatchesKustomizeBase renders deploy/'s kustomize base (with kustomize) and the chart
// with its default values, and compares them object by object, whole: the same kinds, names and
// namespaces, labels and annotations, the Deployment's pod spec (args compared as a set), the
// RBAC rules and bindings, the Service's ports, the PodDisruptionBudget.
func TestChartMatchesKustomizeBase(t *testing.T) {
	var base []*unstructured.Unstructured
	for _, u := range renderBase(t) {
		if inBase(u) {
			base = append(base, u)
		}
	}
	chartObjs := mustRenderChart(t, nil)
	if got, want := keys(chartObjs), keys(base); !slices.Equal(got, want) {
		t.Fatalf("the chart renders\n  %s\nthe kustomize base\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, want := range base {
		got := mustFind(t, chartObjs, want.GetKind(), want.GetName())
		if want.GetKind() == "Deployment" {
			sortArgs(t, want)
			sortArgs(t, got)
		}
		if diff := cmp.Diff(want.Object, got.Object); diff != "" {
			t.Errorf("%s differs (-kustomize +helm):\n%s", key(want), diff)
		}
	}
	if !t.Failed() {
		t.Logf("%d objects equal: %s", len(base), strings.Join(keys(base), ", "))
	}
}

// TestPrometheusRuleIsTheMonitoringOne: the chart's copy of the alerts is
// deploy/monitoring/prometheusrule.yaml byte for byte (a chart cannot read files outside it;
// `go test -update` refreshes the copy), and the PrometheusRule the chart renders carries its spec.
func TestPrometheusRuleIsTheMonitoringOne(t *testing.T) {
	src := readFile(t, ruleSource)
	if *update {
		if err := os.WriteFile(ruleCopy, src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readFile(t, ruleCopy), src) {
		t.Fatalf("%s is not %s: run `go test ./... -run TestPrometheusRule -update` in deploy/helm", ruleCopy, ruleSource)
	}
	var want map[string]any
	if err := yaml.Unmarshal(src, &want); err != nil {
		t.Fatal(err)
	}
	objs := mustRenderChart(t, map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}})
	got := mustFind(t, objs, "PrometheusRule", releaseName)
	if diff := cmp.Diff(want["spec"], got.Object["spec"]); diff != "" {
		t.Errorf("the chart's PrometheusRule spec differs from %s (-want +got):\n%s", ruleSource, diff)
	}
	if got.GetAPIVersion() != want["apiVersion"] {
		t.Errorf("apiVersion %s, want %s", got.GetAPIVersion(), want["apiVersion"])
	}
}

// TestOptionalObjects checks what each toggle adds, without an API server (the dry-run test
// applies the same renderings).
func TestOptionalObjects(t *testing.T) {
	def := kinds(mustRenderChart(t, nil))
	for _, k := range []string{"NetworkPolicy", "ServiceMonitor", "PodMonitor", "PrometheusRule", "RoleBinding"} {
		if def[k] != 0 {
			t.Errorf("the defaults render a %s", k)
		}
	}
	// The EndpointSlice role and, for --zone-from-node (on by default, as in the kustomize
	// base), the Nodes role, each bound.
	if def["Service"] != 1 || def["ClusterRole"] != 2 || def["ClusterRoleBinding"] != 2 || def["PodDisruptionBudget"] != 1 {
		t.Errorf("defaults render %v", def)
	}
	if k := kinds(mustRenderChart(t, map[string]any{"serve": map[string]any{"zoneFromNode": false}})); k["ClusterRole"] != 1 || k["ClusterRoleBinding"] != 1 {
		t.Errorf("serve.zoneFromNode false renders %v: want no Nodes role", k)
	}

	t.Run("monitoring", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["monitoring"])
		sm := mustFind(t, objs, "ServiceMonitor", releaseName)
		admin := mustFind(t, objs, "Service", releaseName+"-admin")
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		for k, v := range sel {
			if admin.GetLabels()[k] != v {
				t.Errorf("the ServiceMonitor selects %v; the admin Service is labelled %v", sel, admin.GetLabels())
			}
		}
		if mustFind(t, objs, "Service", releaseName).GetLabels()["app.kubernetes.io/component"] == "admin" {
			t.Error("the ServiceMonitor would also select the xDS Service")
		}
		mustFind(t, objs, "PodMonitor", releaseName)
		mustFind(t, objs, "PrometheusRule", releaseName)
	})

	t.Run("mtls", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["mtls"])
		a := args(t, objs)
		if !containsAll(a, "--tls-cert-file=/etc/deltaeds/tls/tls.crt", "--tls-key-file=/etc/deltaeds/tls/tls.key", "--tls-client-ca-file=/etc/deltaeds/tls/ca.crt") {
			t.Errorf("args %v lack the TLS flags", a)
		}
		d := mustFind(t, objs, "Deployment", releaseName)
		vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
		if len(vols) != 1 || vols[0].(map[string]any)["secret"].(map[string]any)["secretName"] != "deltaeds-tls" {
			t.Errorf("volumes %v, want the Secret deltaeds-tls", vols)
		}
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		mounts := containers[0].(map[string]any)["volumeMounts"]
		if want := []any{map[string]any{"name": "tls", "mountPath": "/etc/deltaeds/tls", "readOnly": true}}; !cmp.Equal(mounts, want) {
			t.Errorf("volumeMounts %v, want %v", mounts, want)
		}
		ports, _, _ := unstructured.NestedSlice(mustFind(t, objs, "Service", releaseName).Object, "spec", "ports")
		if _, h2c := ports[0].(map[string]any)["appProtocol"]; h2c {
			t.Errorf("the xDS Service port claims %v over TLS", ports[0])
		}
		// Without mutual, no client CA.
		a = args(t, mustRenderChart(t, map[string]any{"tls": map[string]any{"enabled": true, "secretName": "x", "mutual": false}}))
		if slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, "--tls-client-ca-file") }) {
			t.Errorf("tls.mutual false still sets a client CA: %v", a)
		}
	})

	t.Run("node-locality", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["node-locality"])
		if !slices.Contains(args(t, objs), "--node-locality") {
			t.Errorf("args %v lack --node-locality", args(t, objs))
		}
		mustFind(t, objs, "ClusterRole", releaseName+"-nodes")
		mustFind(t, objs, "ClusterRoleBinding", releaseName+"-nodes")
	})

	t.Run("views", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["views"])
		if a := args(t, objs); !containsAll(a, "--zone-from-node", "--internal-traffic-policy", "--node-name-metadata-key=example.com/node") {
			t.Errorf("args %v", a)
		}
		mustFind(t, objs, "ClusterRole", releaseName+"-nodes")
		role := mustFind(t, objs, "ClusterRole", releaseName)
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		if len(rules) != 2 || !cmp.Equal(rules[1].(map[string]any)["resources"], []any{"services"}) {
			t.Errorf("ClusterRole rules %v: want EndpointSlices and Services", rules)
		}
		// "" is passed: --node-name-metadata-key= reads no node name.
		a := args(t, mustRenderChart(t, map[string]any{"serve": map[string]any{"nodeNameMetadataKey": ""}}))
		if !slices.Contains(a, "--node-name-metadata-key=") {
			t.Errorf(`nodeNameMetadataKey "" renders %v`, a)
		}
	})

	t.Run("namespaced", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["namespaced"])
		k := kinds(objs)
		// Nodes are cluster-scoped: their binding (--zone-from-node) stays a ClusterRoleBinding.
		if k["RoleBinding"] != 2 || k["ClusterRoleBinding"] != 1 {
			t.Errorf("serve.namespace [shop web] renders %v; want a RoleBinding in each, and only the Nodes ClusterRoleBinding", k)
		}
		mustFind(t, objs, "ClusterRoleBinding", releaseName+"-nodes")
		if !containsAll(args(t, objs), "--namespace=shop", "--namespace=web") {
			t.Errorf("args %v", args(t, objs))
		}
	})

	t.Run("networkpolicy", func(t *testing.T) {
		objs := mustRenderChart(t, renderings["networkpolicy"])
		np := mustFind(t, objs, "NetworkPolicy", releaseName)
		ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		if len(ingress) != 2 {
			t.Fatalf("ingress %v: want xDS and admin rules", ingress)
		}
		if _, ok := ingress[1].(map[string]any)["from"]; !ok {
			t.Errorf("the admin rule %v is open to every source", ingress[1])
		}
		// Without adminFrom, no rule opens the admin port.
		objs = mustRenderChart(t, map[string]any{"networkPolicy": map[string]any{"enabled": true}})
		ingress, _, _ = unstructured.NestedSlice(mustFind(t, objs, "NetworkPolicy", releaseName).Object, "spec", "ingress")
		if len(ingress) != 1 {
			t.Errorf("ingress %v: want only the xDS rule", ingress)
		}
	})
}

// TestValuesAreChecked: values.schema.json rejects what would make a pod that never starts, and
// the templates refuse contradictory TLS settings.
func TestValuesAreChecked(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"misspelt serve value": {"serve": map[string]any{"xdsAdress": ":18000"}},
		"misspelt top value":   {"replicas": 3},
		"bad duration":         {"serve": map[string]any{"shutdownTimeout": "20 seconds"}},
		"bad log level":        {"serve": map[string]any{"logLevel": "verbose"}},
		"no admin address":     {"serve": map[string]any{"adminAddress": nil}},
		"tls without secret":   {"tls": map[string]any{"enabled": true}},
		"tls and a cert path":  {"tls": map[string]any{"enabled": true, "secretName": "x"}, "serve": map[string]any{"tlsCertFile": "/x"}},
		"bad namespace":        {"serve": map[string]any{"namespace": []any{"Not_A_Namespace"}}},
	} {
		if _, err := renderChart(t, releaseName, releaseNamespace, vals); err == nil {
			t.Errorf("%s: %v rendered", name, vals)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestHelmLint runs `helm lint`'s checks (Helm's lint package, strict: warnings fail too) on the
// chart with each rendering's values, against the Kubernetes version .testbin builds.
func TestHelmLint(t *testing.T) {
	m := regexp.MustCompile(`(?m)^K8S_VERSION=(v[0-9.]+)$`).FindSubmatch(readFile(t, "../../e2e/testbin/build.sh"))
	if m == nil {
		t.Fatal("e2e/testbin/build.sh: no K8S_VERSION")
	}
	kv, err := chartutil.ParseKubeVersion(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	for name, vals := range renderings {
		linter := lint.AllWithKubeVersion(chartDir, valuesFromYAML(t, vals), releaseNamespace, kv)
		for _, msg := range linter.Messages {
			if msg.Severity > support.InfoSev {
				t.Errorf("%s: helm lint: %s", name, msg)
			}
		}
	}
}
