package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/admin"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/xds"
)

// One control plane serves every test that needs an API server; it is
// started on first use and stopped before the leak check.
var (
	cpOnce sync.Once
	cp     *controlplane.ControlPlane
	cpErr  error
)

func controlPlane(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	cpOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cp, cpErr = controlplane.Start(ctx, controlplane.Options{})
	})
	if cpErr != nil {
		t.Fatalf("start control plane (run `make testbin` first): %v", cpErr)
	}
	return cp
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cli runs the command line in-process and returns the exit code, stdout
// and stderr.
func runArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	code := runCLI(ctx, append([]string{"deltaeds"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A kubeconfig that loads fine; nothing connects to it in these tests.
const offlineKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

func TestCommandLineErrors(t *testing.T) {
	kubeconfig := writeFile(t, "kubeconfig", offlineKubeconfig)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := []string{"--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"}
	pki := newPKI(t)

	// The admin-port case opens the xDS listener on this concrete port
	// first, and must close it again.
	xdsPort := freePort(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"unknown command", nil, []string{"serv"}, 2, `unknown command "serv"`},
		{"unknown flag", nil, []string{"serve", "--nope"}, 2, "flag provided but not defined: -nope"},
		{"positional argument", nil, []string{"serve", "extra"}, 2, `unexpected argument "extra"`},
		{"bad duration", nil, []string{"serve", "--max-connection-age", "often"}, 2, "invalid value"},
		{"bad duration from env", map[string]string{"DELTAEDS_SHUTDOWN_TIMEOUT": "soon"}, []string{"serve"}, 2, "DELTAEDS_SHUTDOWN_TIMEOUT"},
		{"bad int from env", map[string]string{"DELTAEDS_KUBE_BURST": "many"}, []string{"serve"}, 2, "DELTAEDS_KUBE_BURST"},
		{"negative max age", nil, []string{"serve", "--max-connection-age", "-1s"}, 2, "must not be negative"},
		{"zero shutdown timeout", nil, []string{"serve", "--shutdown-timeout", "0s"}, 2, "--shutdown-timeout 0s: must be positive"},
		{"keepalive below 1s", nil, []string{"serve", "--keepalive-time", "10ms"}, 2, "at least 1s"},
		{"zero qps", nil, []string{"serve", "--kube-qps", "0"}, 2, "--kube-qps 0: must be positive"},
		{"zero subscriptions", nil, []string{"serve", "--max-subscriptions-per-stream", "0"}, 2, "must be positive"},
		{"zero concurrent streams", nil, []string{"serve", "--max-concurrent-streams", "0"}, 2, "--max-concurrent-streams 0: must be in 1..4294967295"},
		{"too many concurrent streams", nil, []string{"serve", "--max-concurrent-streams", "4294967296"}, 2, "--max-concurrent-streams 4294967296: must be in 1..4294967295"},
		{"negative concurrent streams", nil, []string{"serve", "--max-concurrent-streams", "-1"}, 2, "invalid value"},
		{"bad concurrent streams from env", map[string]string{"DELTAEDS_MAX_CONCURRENT_STREAMS": "lots"}, []string{"serve"}, 2, "DELTAEDS_MAX_CONCURRENT_STREAMS"},
		{"negative ack timeout", nil, []string{"serve", "--ack-timeout", "-1s"}, 2, "--ack-timeout -1s: must not be negative"},
		{"bad xds address", nil, []string{"serve", "--xds-address", "18000"}, 2, "want HOST:PORT"},
		{"bad admin port", nil, []string{"serve", "--admin-address", "127.0.0.1:99999"}, 2, "0..65535"},
		{"bad namespace", nil, []string{"serve", "--namespace", "Shop"}, 2, `--namespace "Shop"`},
		{"bad namespace from env", map[string]string{"DELTAEDS_NAMESPACE": "a,b_c"}, []string{"serve"}, 2, `--namespace "b_c"`},
		{"bad label selector", nil, []string{"serve", "--label-selector", "a in (b"}, 2, "--label-selector"},
		{"bad service proxy name", nil, []string{"serve", "--service-proxy-name", "not a label!"}, 2, "--service-proxy-name"},
		{"bad IP family", nil, []string{"serve", "--ip-family", "ipv5"}, 2, "--ip-family"},
		{"bad log level", nil, []string{"serve", "--log-level", "loud"}, 2, "--log-level"},
		{"bad log format", nil, []string{"serve", "--log-format", "xml"}, 2, "--log-format"},
		{"cert without key", nil, []string{"serve", "--tls-cert-file", "x"}, 2, "go together"},
		{"client CA without cert", nil, []string{"serve", "--tls-client-ca-file", "x"}, 2, "needs --tls-cert-file"},
		{"bootstrap usage", nil, []string{"bootstrap", "--cluster", "x"}, 2, "want namespace/service"},

		{"missing kubeconfig", nil, append([]string{"serve", "--kubeconfig", "/nonexistent/kubeconfig"}, free...), 1, "kubeconfig /nonexistent/kubeconfig"},
		{"garbage kubeconfig", nil, append([]string{"serve", "--kubeconfig", writeFile(t, "bad", "{{{")}, free...), 1, "kubeconfig "},
		{"kubeconfig from env", map[string]string{"DELTAEDS_KUBECONFIG": "/nonexistent/env-kubeconfig"}, append([]string{"serve"}, free...), 1, "/nonexistent/env-kubeconfig"},
		{"no kubeconfig at all", map[string]string{"KUBECONFIG": "", "HOME": t.TempDir()}, append([]string{"serve"}, free...), 1, "pass --kubeconfig"},
		{"missing cert", nil, append([]string{"serve", "--kubeconfig", kubeconfig, "--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", pki.serverKey}, free...), 1, "/nonexistent/tls.crt"},
		{"cert and key mismatch", nil, append([]string{"serve", "--kubeconfig", kubeconfig, "--tls-cert-file", pki.serverCert, "--tls-key-file", pki.clientKey}, free...), 1, "--tls-cert-file"},
		{"client CA not PEM", nil, append([]string{"serve", "--kubeconfig", kubeconfig, "--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey, "--tls-client-ca-file", kubeconfig}, free...), 1, "no PEM certificate"},
		{"xds port in use", nil, []string{"serve", "--kubeconfig", kubeconfig, "--xds-address", busy.Addr().String(), "--admin-address", "127.0.0.1:0"}, 1, "address already in use"},
		{"admin port in use", nil, []string{"serve", "--kubeconfig", kubeconfig, "--xds-address", xdsPort, "--admin-address", busy.Addr().String()}, 1, "--admin-address " + busy.Addr().String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, out, errOut := runArgs(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr %q does not mention %q", errOut, tt.want)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "deltaeds: ") {
				t.Errorf("stderr is not one line starting with deltaeds: %q", errOut)
			}
			if strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, ".go:") {
				t.Errorf("stderr looks like a stack trace: %q", errOut)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
		})
	}
	// The admin-port case had opened the xDS listener on xdsPort: it was
	// closed again.
	assertBindable(t, xdsPort)
}

func TestVersionAndHelp(t *testing.T) {
	code, out, errOut := runArgs(t, "version")
	if code != 0 || !strings.HasPrefix(out, "deltaeds dev (commit ") || !strings.Contains(out, "go1.") || errOut != "" {
		t.Errorf("version: %d %q %q", code, out, errOut)
	}
	code, out, _ = runArgs(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: %d", code)
	}
	// Every flag the issue asks for, with its environment variable and
	// its default.
	for _, want := range []string{
		"--kubeconfig", "$DELTAEDS_KUBECONFIG", "in-cluster config, else $KUBECONFIG, else ~/.kube/config",
		"--xds-address", `(default: ":18000")`, "$DELTAEDS_XDS_ADDRESS",
		"--admin-address", `(default: "127.0.0.1:18001")`, "$DELTAEDS_ADMIN_ADDRESS",
		"--namespace", "(default: all namespaces)", "$DELTAEDS_NAMESPACE",
		"--label-selector", "$DELTAEDS_LABEL_SELECTOR",
		"--service-proxy-name", "$DELTAEDS_SERVICE_PROXY_NAME",
		"--ip-family", `(default: "dual")`, "$DELTAEDS_IP_FAMILY",
		"--tls-cert-file", "--tls-key-file", "--tls-client-ca-file", "$DELTAEDS_TLS_CLIENT_CA_FILE",
		"--max-connection-age ", "(default: 30m0s)", "--max-connection-age-grace",
		"--keepalive-time", "--keepalive-timeout", "--keepalive-min-time",
		"--max-subscriptions-per-stream", "(default: 100000)",
		"--max-concurrent-streams", "(default: 4294967295)", "$DELTAEDS_MAX_CONCURRENT_STREAMS",
		"--ack-timeout", "(default: 0s)", "$DELTAEDS_ACK_TIMEOUT",
		"--include-unready", "--deleted-grace-period", "(default: 5m0s)",
		"--kube-qps", "--kube-burst", "$DELTAEDS_KUBE_BURST",
		"--log-level", `(default: "info")`, "--log-format", `(default: "json")`,
		"--shutdown-timeout",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") && !strings.Contains(line, "[$DELTAEDS_") {
			t.Errorf("flag without an environment variable: %q", line)
		}
	}
	if code, out, _ := runArgs(t, "bootstrap", "--help"); code != 0 || !strings.Contains(out, "$DELTAEDS_BOOTSTRAP_CLUSTER") {
		t.Errorf("bootstrap --help: %d %q", code, out)
	}
}

// gatedConfig holds every request to the API server until open is closed,
// so a test can see deltaeds before its first list.
func gatedConfig(cfg *rest.Config, open <-chan struct{}) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			select {
			case <-open:
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
			return rt.RoundTrip(r)
		})
	}
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func endpointSlice(ns, name, service string, port int32, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func testConfig(rc *rest.Config) serveConfig {
	return serveConfig{
		RESTConfig:                rc,
		KubeQPS:                   100,
		KubeBurst:                 200,
		XDSAddress:                "127.0.0.1:0",
		AdminAddress:              "127.0.0.1:0",
		IPFamily:                  "dual",
		DeletedGracePeriod:        time.Minute,
		Workers:                   2,
		ProbeInterval:             200 * time.Millisecond,
		MaxConnectionAge:          time.Hour,
		MaxConnectionAgeGrace:     time.Minute,
		KeepaliveTime:             time.Minute,
		KeepaliveTimeout:          20 * time.Second,
		KeepaliveMinTime:          10 * time.Second,
		MaxSubscriptionsPerStream: 1000,
		MaxResponseBytes:          1 << 20,
		MaxRequestBytes:           4 << 20,
		MaxConcurrentStreams:      math.MaxUint32,
		ShutdownTimeout:           5 * time.Second,
		LogLevel:                  "info",
		LogFormat:                 "json",
	}
}

// started runs a server until the test ends, and checks that it stops
// cleanly and in time.
type running struct {
	p      *process
	cancel context.CancelFunc
	done   chan error
	admin  string
	xds    string
}

func start(t *testing.T, cfg serveConfig, log *zap.Logger) *running {
	t.Helper()
	p, err := newProcess(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1),
		admin: "http://" + p.adminLis.Addr().String(), xds: p.xdsLis.Addr().String()}
	go func() { r.done <- p.run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop is SIGTERM: cancel and wait, bounded by the shutdown deadline.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(r.p.cfg.ShutdownTimeout + 5*time.Second):
		t.Fatal("run did not return after cancellation")
	}
	http.DefaultClient.CloseIdleConnections()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func healthStatus(t *testing.T, target string, creds credentials.TransportCredentials) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus()
}

// endpoints counts what an Envoy routes to with r.
func endpoints(r envoysim.Route) int {
	n := 0
	for _, g := range r.CLA.GetEndpoints() {
		n += len(g.GetLbEndpoints())
	}
	return n
}

// TestServe runs the whole binary's wiring in-process against a real
// kube-apiserver: EndpointSlices in, CLAs out to a simulated Envoy, and
// every operations endpoint.
func TestServe(t *testing.T) {
	cp := controlPlane(t)
	ctx := t.Context()
	const ns = "serve-test"
	if _, err := cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	slices := client.DiscoveryV1().EndpointSlices(ns)
	if _, err := slices.Create(ctx, endpointSlice(ns, "cart-1", "cart", 8080, "10.1.0.1", "10.1.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	open := make(chan struct{})
	cfg := testConfig(gatedConfig(cp.RESTConfig(), open))
	cfg.Namespaces = []string{ns}
	r := start(t, cfg, zaptest.NewLogger(t))

	// Before the first list: not ready, NOT_SERVING, nothing sent.
	code, body := httpGet(t, r.admin+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Errorf("/readyz before sync = %d %q", code, body)
	}
	if code, body := httpGet(t, r.admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if st := healthStatus(t, r.xds, insecure.NewCredentials()); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("grpc health before sync = %v", st)
	}
	envoy := envoysim.New(envoysim.Config{Target: r.xds, NodeID: "envoy-serve-test", Cluster: "edge"})
	if err := envoy.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	envoy.Subscribe(ns + "/cart/http")

	close(open)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := envoy.WaitFor(wctx, func(s envoysim.State) bool {
		rt, ok := s.Route(ns + "/cart/http")
		return ok && endpoints(rt) == 2
	}); err != nil {
		t.Fatalf("envoy never got the CLA: %v (%v)", err, envoy.Routes())
	}
	eventually(t, "/readyz 200", func() bool { c, _ := httpGet(t, r.admin+"/readyz"); return c == 200 })
	eventually(t, "grpc health SERVING", func() bool {
		return healthStatus(t, r.xds, insecure.NewCredentials()) == healthpb.HealthCheckResponse_SERVING
	})

	// A change reaches the Envoy.
	cur, err := slices.Get(ctx, "cart-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upd := endpointSlice(ns, "cart-1", "cart", 8080, "10.1.0.1", "10.1.0.2", "10.1.0.3")
	upd.ResourceVersion = cur.ResourceVersion
	if _, err := slices.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := envoy.WaitFor(wctx, func(s envoysim.State) bool {
		rt, ok := s.Route(ns + "/cart/http")
		return ok && endpoints(rt) == 3
	}); err != nil {
		t.Fatalf("the update never arrived: %v", err)
	}
	// The version the server sent, to compare with what it says it serves.
	held, _ := envoy.Held(ns + "/cart/http")
	eventually(t, "the ACK", func() bool {
		for _, s := range r.p.delta.Streams() {
			if s.NodeID == "envoy-serve-test" && !s.LastACK.IsZero() && s.Pending == 0 {
				return true
			}
		}
		return false
	})

	// /debug/resources
	code, body = httpGet(t, r.admin+"/debug/resources")
	var res admin.ResourcesResponse
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 {
		t.Fatalf("/debug/resources = %d %v %q", code, err, body)
	}
	if !res.Synced || res.Count != 1 || res.Resources[0].Name != ns+"/cart/http" || res.Resources[0].Version != held.Version ||
		res.Resources[0].Endpoints != 3 || len(res.Resources[0].Priorities) != 1 || res.Resources[0].Priorities[0].Health["HEALTHY"] != 3 {
		t.Errorf("/debug/resources = %s", body)
	}

	// /debug/streams
	code, body = httpGet(t, r.admin+"/debug/streams")
	var st admin.StreamsResponse
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("/debug/streams = %d %v %q", code, err, body)
	}
	if st.Count != 1 || st.Streams[0].NodeID != "envoy-serve-test" || st.Streams[0].Subscriptions != 1 ||
		st.Streams[0].LastACK.IsZero() || !strings.HasPrefix(st.Streams[0].Peer, "127.0.0.1:") {
		t.Errorf("/debug/streams = %s", body)
	}

	// /metrics
	code, body = httpGet(t, r.admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	typeLabel := `{type_url="` + xds.EndpointType + `"}`
	for _, want := range []string{
		"deltaeds_xds_streams 1",
		"deltaeds_subscriptions" + typeLabel + " 1",
		"deltaeds_subscribed_names" + typeLabel + " 1",
		"deltaeds_store_resources" + typeLabel + " 1",
		"deltaeds_store_synced 1",
		"deltaeds_apiserver_up 1",
		"deltaeds_apiserver_last_event_age_seconds ",
		"deltaeds_xds_responses_total",
		"deltaeds_xds_acks_total",
		"deltaeds_endpointslice_events_total",
		"deltaeds_translation_duration_seconds_bucket",
		"deltaeds_propagation_send_seconds_bucket",
		"deltaeds_propagation_ack_seconds_bucket",
		"deltaeds_build_info",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// SIGTERM: the stream ends, everything stops within the deadline (the
	// leak check in TestMain covers what is left).
	begin := time.Now()
	r.stop(t)
	if d := time.Since(begin); d > cfg.ShutdownTimeout {
		t.Errorf("stopping took %v, more than the %v deadline", d, cfg.ShutdownTimeout)
	}
	if err := envoy.Close(); err != nil {
		t.Error(err)
	}
	for _, v := range envoy.Violations() {
		t.Errorf("protocol violation: %v", v)
	}
}

// TestServeMTLS serves xDS over mTLS: a client with a certificate from the
// CA gets its CLA, one without is refused.
func TestServeMTLS(t *testing.T) {
	cp := controlPlane(t)
	ctx := t.Context()
	const ns = "mtls-test"
	if _, err := cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice(ns, "db-1", "db", 5432, "10.9.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pki := newPKI(t)
	cfg := testConfig(cp.RESTConfig())
	cfg.Namespaces = []string{ns}
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = pki.serverCert, pki.serverKey, pki.caCert
	r := start(t, cfg, zaptest.NewLogger(t))

	clientCert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert := credentials.NewTLS(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{clientCert}, ServerName: "deltaeds.test"})
	eventually(t, "grpc health SERVING over mTLS", func() bool {
		return healthStatus(t, r.xds, withCert) == healthpb.HealthCheckResponse_SERVING
	})
	envoy := envoysim.New(envoysim.Config{Target: r.xds, NodeID: "envoy-mtls", Creds: withCert})
	if err := envoy.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	envoy.Subscribe(ns + "/db/http")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := envoy.WaitFor(wctx, func(s envoysim.State) bool { rt, ok := s.Route(ns + "/db/http"); return ok && endpoints(rt) == 1 }); err != nil {
		t.Fatalf("mTLS client got nothing: %v", err)
	}

	// Without a client certificate the handshake fails.
	noCert := credentials.NewTLS(&tls.Config{RootCAs: pki.pool, ServerName: "deltaeds.test"})
	conn, err := grpc.NewClient(r.xds, grpc.WithTransportCredentials(noCert))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("a client without a certificate was served")
	}
	// Nor does plaintext work.
	pconn, err := grpc.NewClient(r.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	if _, err := healthpb.NewHealthClient(pconn).Check(cctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("a plaintext client was served")
	}
}

// TestStopWithinDeadline: a stream that never ends by itself cannot hold
// the process past the shutdown deadline.
func TestStopWithinDeadline(t *testing.T) {
	cp := controlPlane(t)
	cfg := testConfig(cp.RESTConfig())
	cfg.Namespaces = []string{"default"}
	cfg.ShutdownTimeout = 2 * time.Second
	r := start(t, cfg, zaptest.NewLogger(t))

	// A health Watch stream never ends by itself; it is ended at shutdown
	// (TestHealthWatchEndsAtShutdown), and the deadline bounds the stop in
	// any case.
	conn, err := grpc.NewClient(r.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	r.stop(t)
	if d := time.Since(begin); d > cfg.ShutdownTimeout+time.Second {
		t.Errorf("stopping took %v with a %v deadline", d, cfg.ShutdownTimeout)
	}
	conn.Close()
}

// TestHealthWatchEndsAtShutdown: a gRPC health Watch stream, which gRPC
// keeps open for as long as its client wants, says NOT_SERVING and ends when
// the shutdown begins, so it does not hold the graceful stop until
// --shutdown-timeout. The deadline is long and the bound generous: only a
// Watch that holds the stop fails it.
func TestHealthWatchEndsAtShutdown(t *testing.T) {
	cp := controlPlane(t)
	cfg := testConfig(cp.RESTConfig())
	cfg.Namespaces = []string{"default"}
	cfg.ShutdownTimeout = time.Minute
	r := start(t, cfg, zaptest.NewLogger(t))

	conn, err := grpc.NewClient(r.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("watch before the stop: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	type watchEnd struct {
		statuses []healthpb.HealthCheckResponse_ServingStatus
		err      error
	}
	ended := make(chan watchEnd, 1)
	go func() {
		var e watchEnd
		for {
			resp, err := w.Recv()
			if err != nil {
				e.err = err
				ended <- e
				return
			}
			e.statuses = append(e.statuses, resp.GetStatus())
		}
	}()

	// SIGTERM.
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("run did not return within 20s of the stop, with a %v shutdown timeout: the health Watch holds the graceful stop", cfg.ShutdownTimeout)
		<-r.done
	}
	http.DefaultClient.CloseIdleConnections()
	e := <-ended
	if len(e.statuses) != 1 || e.statuses[0] != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watch got %v after the stop, want [NOT_SERVING]", e.statuses)
	}
	if status.Code(e.err) != codes.Unavailable {
		t.Errorf("watch ended with %v, want Unavailable", e.err)
	}
}

// TestMaxConcurrentStreams: --max-concurrent-streams reaches gRPC. With 1, a
// connection's second stream waits for its first to end.
func TestMaxConcurrentStreams(t *testing.T) {
	cfg := testConfig(&rest.Config{Host: "https://127.0.0.1:1"}) // never contacted
	cfg.MaxConcurrentStreams = 1
	p, err := newProcess(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.closeAll()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = p.grpc.Serve(p.xdsLis)
	}()
	defer func() {
		p.grpc.Stop()
		<-served
	}()

	conn, err := grpc.NewClient(p.xdsLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	wctx, wcancel := context.WithCancel(t.Context())
	defer wcancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the server's settings are known by now
		t.Fatal(err)
	}
	// Not an upper bound on anything: without the limit the Check is served
	// whatever the deadline; with it, it cannot be.
	cctx, ccancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer ccancel()
	if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a second stream while the first is open: err = %v, want DeadlineExceeded", err)
	}
	wcancel()
	cctx, ccancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer ccancel()
	if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("check once the first stream ended: %v", err)
	}
}

// TestPortInUseLeavesNothingOpen: the xDS listener, opened on a concrete
// port before the admin port turns out to be in use, is closed again: that
// same port can be bound afterwards.
func TestPortInUseLeavesNothingOpen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	cfg.AdminAddress = busy.Addr().String()
	cfg.XDSAddress = freePort(t)
	if _, err := newProcess(cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err = %v", err)
	}
	assertBindable(t, cfg.XDSAddress)
}

// freePort returns a loopback HOST:PORT nothing listens on (it was bound,
// then released).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// assertBindable fails the test if addr cannot be listened on: a listener
// left open holds it.
func assertBindable(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("%s cannot be bound again, so a listener on it was left open: %v", addr, err)
		return
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
}

type testPKI struct {
	pool                                                 *x509.CertPool
	caCert, serverCert, serverKey, clientCert, clientKey string
}

// newPKI writes a CA, a server certificate for deltaeds.test and 127.0.0.1,
// and a client certificate.
func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	g := newTLSGeneration(t, "test CA")
	p := testPKI{pool: g.ca.Pool(), caCert: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(p.caCert, g.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if p.serverCert, p.serverKey, err = g.server.WriteFiles(dir, "tls"); err != nil {
		t.Fatal(err)
	}
	if p.clientCert, p.clientKey, err = g.client.WriteFiles(dir, "client"); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBinarySIGTERM builds the real binary, runs `deltaeds serve` against
// the control plane's kubeconfig, waits for /readyz and stops it with
// SIGTERM: exit code 0, JSON logs with stable keys, "stopped" last.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cp := controlPlane(t)
	bin := filepath.Join(t.TempDir(), "deltaeds")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--kubeconfig", cp.KubeconfigPath(), "--xds-address", "127.0.0.1:0",
		"--admin-address", "127.0.0.1:0", "--namespace", "default", "--shutdown-timeout", "5s")
	cmd.Env = append(os.Environ(), "DELTAEDS_LOG_LEVEL=debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan map[string]any, 1000)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(lines)
		dec := json.NewDecoder(stderr)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if err != io.EOF {
					t.Errorf("stderr is not JSON lines: %v", err)
				}
				return
			}
			lines <- m
		}
	}()
	var logs []map[string]any
	var adminAddr string
	timeout := time.After(30 * time.Second)
	for adminAddr == "" {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("deltaeds exited early: %v", logs)
			}
			logs = append(logs, m)
			if m["msg"] == "serving" {
				adminAddr, _ = m["admin_address"].(string)
			}
		case <-timeout:
			t.Fatalf("no serving log line: %v", logs)
		}
	}
	eventually(t, "/readyz", func() bool { c, _ := httpGet(t, "http://"+adminAddr+"/readyz"); return c == 200 })
	http.DefaultClient.CloseIdleConnections()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for m := range lines {
		logs = append(logs, m)
	}
	<-readDone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	for _, m := range logs {
		for _, key := range []string{"ts", "level", "msg", "caller"} {
			if _, ok := m[key]; !ok {
				t.Errorf("log line without %q: %v", key, m)
			}
		}
	}
	if last := logs[len(logs)-1]; last["msg"] != "stopped" {
		t.Errorf("last log line = %v, want stopped", last)
	}
}
