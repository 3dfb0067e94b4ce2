package helm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "chart"
	baseDir  = ".." // the kustomize base, deploy/
	// The release the comparison with the base installs: its name and namespace are the base's.
	releaseName      = "deltaeds"
	releaseNamespace = "deltaeds"
)

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	return ch
}

// valuesFromYAML turns v into chart values the way `helm install -f` reads a values file, so
// numbers arrive as float64, as they do from a user's YAML.
func valuesFromYAML(t *testing.T, v map[string]any) chartutil.Values {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ReadValues(data)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// renderChart renders the chart with Helm's own install action, client-only and dry-run (what
// `helm template` does, including the values.schema.json validation), into its objects.
func renderChart(t *testing.T, release, namespace string, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{Log: func(format string, v ...any) { t.Logf("helm: "+format, v...) }})
	install.DryRun = true
	install.DryRunOption = "client"
	install.ClientOnly = true
	install.Replace = true
	install.IncludeCRDs = true
	install.ReleaseName = release
	install.Namespace = namespace
	rel, err := install.Run(loadChart(t), valuesFromYAML(t, vals))
	if err != nil {
		return nil, err
	}
	if len(rel.Hooks) > 0 {
		t.Errorf("the chart has hooks (%d); the tests apply only the manifest", len(rel.Hooks))
	}
	return decodeAll(t, []byte(rel.Manifest)), nil
}

func mustRenderChart(t *testing.T, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	objs, err := renderChart(t, releaseName, releaseNamespace, vals)
	if err != nil {
		t.Fatalf("render the chart with %v: %v", vals, err)
	}
	return objs
}

func decodeAll(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode the rendering: %v\n%s", err, data)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetName() == "" {
			t.Fatalf("a document without kind or name: %v", m)
		}
		objs = append(objs, u)
	}
	return objs
}

// renderBase renders deploy/'s kustomize base with kustomize itself.
func renderBase(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), baseDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", baseDir, err)
	}
	data, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, data)
}

func key(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s/%s %s/%s", u.GroupVersionKind().GroupVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, u := range objs {
		out = append(out, key(u))
	}
	sort.Strings(out)
	return out
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func mustFind(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	u := find(objs, kind, name)
	if u == nil {
		t.Fatalf("no %s %s in %s", kind, name, strings.Join(keys(objs), ", "))
	}
	return u
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, u := range objs {
		m[u.GetKind()]++
	}
	return m
}

// args returns the deltaeds container's args.
func args(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	d := mustFind(t, objs, "Deployment", releaseName)
	containers, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		t.Fatalf("Deployment containers: %v (%d)", err, len(containers))
	}
	raw, _, err := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if err != nil {
		t.Fatalf("Deployment args: %v", err)
	}
	return raw
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
