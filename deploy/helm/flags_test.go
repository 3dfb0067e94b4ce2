package helm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"sigs.k8s.io/yaml"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// deltaeds builds the binary from this tree once per test process.
func deltaeds(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deltaeds-helm-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "deltaeds")
		// Built in the main module (../..), with its own go.mod and go.sum.
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// serveFlag is one flag of `deltaeds serve` as its --help shows it.
type serveFlag struct {
	name        string
	placeholder string // "" for a boolean flag, "value", FILE, HOST:PORT...
	def         string // the default as shown, unquoted; "" when none or not a value
}

// One flag line of urfave/cli's help: "--name PLACEHOLDER [ --name PLACEHOLDER ]  usage (default: X) [$ENV]".
// The placeholder is "value", or the usage's first `quoted` text, which may hold single spaces.
var (
	flagLine   = regexp.MustCompile(`^\s+--([a-z0-9-]+)(?: (\S+(?: \S+)*?))?(?: \[ --[a-z0-9-]+ [^]]* \])?\s{2,}(.*)\[\$(DELTAEDS_[A-Z0-9_]+)\]\s*$`)
	defaultEnd = regexp.MustCompile(`\(default: (.*)\) $`)
)

// serveFlags reads the flags of `deltaeds serve --help`: the binary's flag table (flags.go) is
// the source of truth, and every flag has its DELTAEDS_ environment variable there.
func serveFlags(t *testing.T) []serveFlag {
	t.Helper()
	out, err := exec.Command(deltaeds(t), "serve", "--help").Output()
	if err != nil {
		t.Fatalf("deltaeds serve --help: %v", err)
	}
	flags := parseHelp(t, string(out))
	if len(flags) < 20 {
		t.Fatalf("deltaeds serve --help shows %d flags; the parser is broken:\n%s", len(flags), out)
	}
	return flags
}

// parseHelp reads the flag lines of urfave/cli's help.
func parseHelp(t *testing.T, out string) []serveFlag {
	t.Helper()
	var flags []serveFlag
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") || !strings.Contains(line, "[$DELTAEDS_") {
			continue
		}
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("deltaeds serve --help: cannot read the flag line %q", line)
		}
		f := serveFlag{name: m[1], placeholder: m[2]}
		if env := "DELTAEDS_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_")); env != m[4] {
			t.Fatalf("--%s: environment variable %s, want %s", f.name, m[4], env)
		}
		if d := defaultEnd.FindStringSubmatch(m[3]); d != nil {
			f.def = d[1]
			if u, err := strconv.Unquote(f.def); err == nil {
				f.def = u
			}
		}
		flags = append(flags, f)
	}
	return flags
}

// TestParseHelp: the help lines of each kind of flag are read right, including a placeholder of
// several words (urfave/cli takes the usage's first `quoted` text as the placeholder).
func TestParseHelp(t *testing.T) {
	help := `OPTIONS:
   --include-unready                                also send endpoints (default: false) [$DELTAEDS_INCLUDE_UNREADY]
   --ip-family value                                address families served: ipv4, ipv6 or dual (default: "dual") [$DELTAEDS_IP_FAMILY]
   --kubeconfig FILE                                reach the API server with this kubeconfig FILE (default: in-cluster config, else $KUBECONFIG) [$DELTAEDS_KUBECONFIG]
   --namespace NAMESPACE [ --namespace NAMESPACE ]  watch only this NAMESPACE (repeatable) (default: all namespaces) [$DELTAEDS_NAMESPACE]
   --tls-key-file FILE        private key FILE of --tls-cert-file (PEM) [$DELTAEDS_TLS_KEY_FILE]
   --node-name-metadata-key deltaeds bootstrap --node-name  the node.metadata field (deltaeds bootstrap --node-name writes it) (default: "deltaeds.io/node-name") [$DELTAEDS_NODE_NAME_METADATA_KEY]
   --max-concurrent-streams value        concurrent gRPC streams (default: 4294967295) [$DELTAEDS_MAX_CONCURRENT_STREAMS]
`
	want := []serveFlag{
		{name: "include-unready", def: "false"},
		{name: "ip-family", placeholder: "value", def: "dual"},
		{name: "kubeconfig", placeholder: "FILE", def: "in-cluster config, else $KUBECONFIG"},
		{name: "namespace", placeholder: "NAMESPACE", def: "all namespaces"},
		{name: "tls-key-file", placeholder: "FILE"},
		{name: "node-name-metadata-key", placeholder: "deltaeds bootstrap --node-name", def: "deltaeds.io/node-name"},
		{name: "max-concurrent-streams", placeholder: "value", def: "4294967295"},
	}
	if got := parseHelp(t, help); !slices.Equal(got, want) {
		t.Errorf("parseHelp =\n%+v\nwant\n%+v", got, want)
	}
}

// valueName is the chart's value for a flag: serve.<flag in camelCase>.
func valueName(flag string) string {
	parts := strings.Split(flag, "-")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

// sample is a value for f that the binary accepts (with the other samples), and the args the
// chart must render for it: its default where --help shows one as a value, else one made from
// its placeholder.
func sample(t *testing.T, f serveFlag) (any, []string) {
	t.Helper()
	switch {
	case f.placeholder == "":
		return true, []string{"--" + f.name}
	case f.name == "kubeconfig":
		// Read first of the runtime checks that come after the flags': the run stops there.
		return "/nonexistent/kubeconfig", []string{"--kubeconfig=/nonexistent/kubeconfig"}
	case f.placeholder == "NAMESPACE":
		return []any{"shop", "web"}, []string{"--" + f.name + "=shop", "--" + f.name + "=web"}
	case f.placeholder == "FILE":
		p := "/nonexistent/" + f.name
		return p, []string{"--" + f.name + "=" + p}
	case f.placeholder == "SELECTOR":
		return "app=shop", []string{"--" + f.name + "=app=shop"}
	case f.placeholder == "NAME":
		return "deltaeds-test", []string{"--" + f.name + "=deltaeds-test"}
	case f.def != "":
		if n, err := strconv.ParseInt(f.def, 10, 64); err == nil {
			return n, []string{"--" + f.name + "=" + f.def}
		}
		if x, err := strconv.ParseFloat(f.def, 64); err == nil {
			return x, []string{"--" + f.name + "=" + f.def}
		}
		return f.def, []string{"--" + f.name + "=" + f.def}
	}
	t.Fatalf("--%s (%s): no sample value; teach sample() its placeholder", f.name, f.placeholder)
	return nil, nil
}

// TestEveryServeFlagHasAValue: each flag of `deltaeds serve` is a value of the chart
// (serve.<camelCase>, in values.yaml and values.schema.json), setting it renders the flag, and
// the binary accepts the args of every flag set at once; every serve value is a flag.
func TestEveryServeFlagHasAValue(t *testing.T) {
	var values struct {
		Serve map[string]any `json:"serve"`
	}
	if err := yaml.Unmarshal(readFile(t, "chart/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Serve struct {
				Properties map[string]any `json:"properties"`
			} `json:"serve"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(readFile(t, "chart/values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}

	flags := serveFlags(t)
	all := map[string]any{}
	var allArgs []string
	known := map[string]bool{}
	for _, f := range flags {
		name := valueName(f.name)
		known[name] = true
		if _, ok := values.Serve[name]; !ok {
			t.Errorf("--%s has no value serve.%s in chart/values.yaml", f.name, name)
			continue
		}
		if _, ok := schema.Properties.Serve.Properties[name]; !ok {
			t.Errorf("--%s: serve.%s is not in chart/values.schema.json", f.name, name)
			continue
		}
		v, want := sample(t, f)
		got := args(t, mustRenderChart(t, map[string]any{"serve": map[string]any{name: v}}))
		if !containsAll(got, want...) {
			t.Errorf("serve.%s: %v renders args %v, want %v among them", name, v, got, want)
		}
		all[name] = v
		allArgs = append(allArgs, want...)
	}
	for name := range values.Serve {
		if !known[name] {
			t.Errorf("serve.%s in chart/values.yaml is no flag of deltaeds serve", name)
		}
	}
	for name := range schema.Properties.Serve.Properties {
		if !known[name] {
			t.Errorf("serve.%s in chart/values.schema.json is no flag of deltaeds serve", name)
		}
	}
	if !t.Failed() {
		t.Logf("%d flags of deltaeds serve, each a value of the chart", len(flags))
	}

	// Every flag at once: parsed and checked (exit 2 is a usage error), so the binary gets as far
	// as the files it is given (exit 1).
	got := args(t, mustRenderChart(t, map[string]any{"serve": all}))
	if !containsAll(got, allArgs...) {
		t.Errorf("every value set renders %v, want %v among them", got, allArgs)
	}
	runServe(t, got, func(code int, stderr string) bool { return code == 1 })
}

// TestDefaultArgsAreAccepted runs the binary with the args of the chart's default rendering (and
// of the mTLS one): they parse, so it gets as far as the kubeconfig it is denied here.
func TestDefaultArgsAreAccepted(t *testing.T) {
	for _, r := range []string{"defaults", "mtls", "node-locality", "views", "namespaced"} {
		a := append(args(t, mustRenderChart(t, renderings[r])), "--kubeconfig=/nonexistent/kubeconfig")
		runServe(t, a, func(code int, stderr string) bool {
			if r == "mtls" {
				// The certificate files, read before the kubeconfig, are not here.
				return code == 1 && strings.Contains(stderr, "/etc/deltaeds/tls/")
			}
			return code == 1 && strings.Contains(stderr, "kubeconfig /nonexistent/kubeconfig")
		})
	}
}

// runServe runs `deltaeds serve ARGS` (the image's entrypoint is `/deltaeds serve`) with no
// DELTAEDS_ variables and checks how it ends.
func runServe(t *testing.T, a []string, ok func(code int, stderr string) bool) {
	t.Helper()
	cmd := exec.Command(deltaeds(t), append([]string{"serve"}, a...)...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DELTAEDS_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if !ok(code, stderr.String()) {
		t.Errorf("deltaeds serve %s: exit %d, stderr %q", strings.Join(a, " "), code, stderr.String())
	} else {
		t.Logf("deltaeds serve %s: exit %d, %s", strings.Join(a, " "), code, strings.TrimSpace(stderr.String()))
	}
}

// renderings are the value sets every test renders: the dry-run applies each to the API server.
var renderings = map[string]map[string]any{
	"defaults": nil,
	"mtls": {
		"tls": map[string]any{"enabled": true, "secretName": "deltaeds-tls"},
	},
	"monitoring": {
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
			"podMonitor":     map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true},
		},
	},
	"node-locality": {
		"serve": map[string]any{"nodeLocality": true},
	},
	"views": {
		"serve": map[string]any{"zoneFromNode": true, "internalTrafficPolicy": true, "nodeNameMetadataKey": "example.com/node"},
	},
	"namespaced": {
		"serve": map[string]any{"namespace": []any{"shop", "web"}},
	},
	"networkpolicy": {
		"networkPolicy": map[string]any{
			"enabled":   true,
			"xdsFrom":   []any{map[string]any{"namespaceSelector": map[string]any{}, "podSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "envoy"}}}},
			"adminFrom": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}},
		},
	},
	"everything": {
		"replicaCount":  3,
		"serve":         map[string]any{"nodeLocality": true, "namespace": []any{"shop"}, "logLevel": "debug"},
		"rbac":          map[string]any{"services": true},
		"tls":           map[string]any{"enabled": true, "secretName": "deltaeds-tls"},
		"service":       map[string]any{"admin": map[string]any{"enabled": true}},
		"networkPolicy": map[string]any{"enabled": true},
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": true},
			"podMonitor":     map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true},
		},
		"podDisruptionBudget": map[string]any{"maxUnavailable": 1},
		"affinity":            map[string]any{},
		"commonLabels":        map[string]any{"team": "edge"},
	},
}
