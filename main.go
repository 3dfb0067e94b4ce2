// Command deltaeds serves Kubernetes EndpointSlices to Envoy as Delta EDS.
//
//	deltaeds serve      run the control plane: watch -> translate -> xds -> delta
//	deltaeds bootstrap  write an Envoy bootstrap pointing at it
//	deltaeds check      lint an Envoy bootstrap against deltaeds and the cluster
//	deltaeds version    print the version, commit and Go version
//
// This file only wires the packages together and owns the process: flags,
// logging, signals, listeners, TLS and the graceful stop. The watch package
// owns Kubernetes, delta owns the xDS protocol, admin the operations HTTP
// server and bootstrap the Envoy configuration; none of them imports another
// of those four.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/deltaeds/deltaeds/admin"
	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/watch"
	"github.com/deltaeds/deltaeds/xds"
)

// Set at build time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
// When commit is empty it is read from the VCS stamp Go embeds.
var (
	version = "dev"
	commit  = ""
)

// Exit codes.
const (
	exitError = 1
	exitUsage = 2
)

// The gRPC services whose health is reported on the xDS port, besides ""
// (the server as a whole).
var healthServices = []string{
	"envoy.service.discovery.v3.AggregatedDiscoveryService",
	"envoy.service.endpoint.v3.EndpointDiscoveryService",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process at once.
		<-ctx.Done()
		stop()
	}()
	code := runCLI(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runCLI runs the command line and returns the exit code, having printed
// any error as one line on stderr.
func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).RunContext(ctx, args)
	if err == nil {
		return 0
	}
	code := exitError
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := oneLine(err.Error()); msg != "" {
		fmt.Fprintf(stderr, "deltaeds: %s\n", msg)
	}
	return code
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), exitUsage)
}

func onUsageError(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		return usageError("%s: %v (see deltaeds %s--help)", strings.TrimSpace(cmd), err, cmd)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	serve := serveCommand()
	bs := bootstrap.Command()
	return &cli.App{
		Name:  "deltaeds",
		Usage: "serve Kubernetes EndpointSlices to Envoy over Delta xDS (incremental EDS)",
		Description: "deltaeds watches EndpointSlices and serves each Service port as an Envoy\n" +
			"ClusterLoadAssignment named NAMESPACE/SERVICE/PORT over Delta ADS.",
		Commands:        []*cli.Command{serve, bs, bootstrap.CheckCommand(), versionCommand()},
		Writer:          stdout,
		ErrWriter:       stderr,
		HideVersion:     true,
		HideHelpCommand: true,
		// Errors are printed once, by runCLI; cli must neither print nor exit.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError(""),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError("unknown command %q (see deltaeds --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

func versionString() string {
	v, c := version, commit
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		if c == "" {
			dirty := false
			for _, s := range info.Settings {
				switch {
				case s.Key == "vcs.revision":
					c = s.Value
				case s.Key == "vcs.modified" && s.Value == "true":
					dirty = true
				}
			}
			if c != "" && dirty {
				c += "-dirty"
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("deltaeds %s (commit %s, %s %s/%s)", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func buildInfo() admin.BuildInfo {
	c := commit
	if info, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				c = s.Value
			}
		}
	}
	return admin.BuildInfo{Version: version, Commit: c, GoVersion: runtime.Version()}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:         "version",
		Usage:        "print the version, commit and Go version",
		OnUsageError: onUsageError("version "),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError("version: unexpected argument %q", c.Args().First())
			}
			_, err := fmt.Fprintln(c.App.Writer, versionString())
			return err
		},
	}
}

// serveConfig is everything `deltaeds serve` needs.
type serveConfig struct {
	// Kubeconfig is a kubeconfig path; "" means in-cluster, else
	// $KUBECONFIG, else ~/.kube/config. RESTConfig, when set, is used
	// instead (tests).
	Kubeconfig string
	RESTConfig *rest.Config
	KubeQPS    float64
	KubeBurst  int

	XDSAddress   string
	AdminAddress string

	Namespaces         []string
	LabelSelector      string
	ServiceProxyName   string
	IncludeUnready     bool
	NodeLocality       bool
	DeletedGracePeriod time.Duration
	Workers            int
	ProbeInterval      time.Duration

	TLSCertFile     string
	TLSKeyFile      string
	TLSClientCAFile string

	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	KeepaliveTime         time.Duration
	KeepaliveTimeout      time.Duration
	KeepaliveMinTime      time.Duration

	MaxSubscriptionsPerStream int
	MaxResponseBytes          int
	MaxRequestBytes           int
	// MaxConcurrentStreams bounds the streams of one HTTP/2 connection, in
	// 1..math.MaxUint32 (gRPC's own default, no limit).
	MaxConcurrentStreams uint64
	// AckTimeout ends a stream whose response waits longer for its ACK or
	// NACK; 0 means never.
	AckTimeout time.Duration

	ShutdownTimeout time.Duration
}

// Defaults of `deltaeds serve`.
const (
	defaultXDSAddress            = ":18000"
	defaultAdminAddress          = "127.0.0.1:18001"
	defaultMaxConnectionAge      = 30 * time.Minute
	defaultMaxConnectionAgeGrace = time.Minute
	defaultKeepaliveTime         = time.Minute
	defaultKeepaliveTimeout      = 20 * time.Second
	defaultKeepaliveMinTime      = 10 * time.Second
	defaultKubeQPS               = 20
	defaultKubeBurst             = 40
	defaultShutdownTimeout       = 20 * time.Second
	defaultProbeInterval         = 10 * time.Second
	defaultWorkers               = 2
	// gRPC's default when no limit is set: math.MaxUint32.
	defaultMaxConcurrentStreams = math.MaxUint32
)

func env(flag string) []string {
	return []string{"DELTAEDS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func serveCommand() *cli.Command {
	const (
		catKube = "Kubernetes:"
		catXDS  = "xDS server:"
		catTLS  = "TLS:"
		catOps  = "Operations:"
	)
	return &cli.Command{
		Name:      "serve",
		Usage:     "watch EndpointSlices and serve them to Envoy over Delta xDS",
		UsageText: "deltaeds serve [--kubeconfig FILE] [--xds-address HOST:PORT] [--admin-address HOST:PORT] [options]",
		Description: "Every flag can also be set with the environment variable shown next to it.\n" +
			"SIGTERM or SIGINT stops it gracefully within --shutdown-timeout; a second signal stops it at once.",
		Flags: []cli.Flag{
			&cli.StringFlag{Category: catKube, Name: "kubeconfig", EnvVars: env("kubeconfig"),
				DefaultText: "in-cluster config, else $KUBECONFIG, else ~/.kube/config",
				Usage:       "reach the API server with this kubeconfig `FILE`"},
			&cli.StringSliceFlag{Category: catKube, Name: "namespace", EnvVars: env("namespace"), DefaultText: "all namespaces",
				Usage: "watch only this `NAMESPACE` (repeatable; comma-separated in the environment)"},
			&cli.StringFlag{Category: catKube, Name: "label-selector", EnvVars: env("label-selector"), DefaultText: "every EndpointSlice",
				Usage: "watch only the EndpointSlices matching this label `SELECTOR`"},
			&cli.StringFlag{Category: catKube, Name: "service-proxy-name", EnvVars: env("service-proxy-name"), DefaultText: "none: like kube-proxy, skip Services labelled service.kubernetes.io/service-proxy-name",
				Usage: "serve exactly the Services labelled service.kubernetes.io/service-proxy-name=`NAME` (handed to deltaeds, as kube-proxy alternatives are)"},
			&cli.BoolFlag{Category: catKube, Name: "include-unready", EnvVars: env("include-unready"),
				Usage: "also send endpoints that are neither ready nor terminating-but-serving, as UNHEALTHY at priority 2 (after the terminating fallback): visible in Envoy's admin, never carrying traffic while a ready or terminating endpoint is healthy"},
			&cli.BoolFlag{Category: catKube, Name: "node-locality", EnvVars: env("node-locality"),
				Usage: "watch Nodes (cluster-scoped get/list/watch) and put each endpoint's region, from its Node's topology.kubernetes.io/region label, in its CLA locality next to the zone, so that Envoys whose bootstrap sets node.locality.region find their local hosts"},
			&cli.DurationFlag{Category: catKube, Name: "deleted-grace-period", Value: watch.DefaultDeletedGracePeriod, EnvVars: env("deleted-grace-period"),
				Usage: "how long a CLA whose Service or port is gone stays published, empty, before it is removed"},
			&cli.Float64Flag{Category: catKube, Name: "kube-qps", Value: defaultKubeQPS, EnvVars: env("kube-qps"),
				Usage: "queries per second to the API server"},
			&cli.IntFlag{Category: catKube, Name: "kube-burst", Value: defaultKubeBurst, EnvVars: env("kube-burst"),
				Usage: "burst of queries to the API server"},
			&cli.DurationFlag{Category: catKube, Name: "apiserver-probe-interval", Value: defaultProbeInterval, EnvVars: env("apiserver-probe-interval"),
				Usage: "how often the API server's /readyz is probed to report its health"},
			&cli.IntFlag{Category: catKube, Name: "workers", Value: defaultWorkers, EnvVars: env("workers"),
				Usage: "Services translated concurrently"},

			&cli.StringFlag{Category: catXDS, Name: "xds-address", Value: defaultXDSAddress, EnvVars: env("xds-address"),
				Usage: "listen on `HOST:PORT` for Delta xDS and grpc.health.v1 (gRPC)"},
			&cli.DurationFlag{Category: catXDS, Name: "max-connection-age", Value: defaultMaxConnectionAge, EnvVars: env("max-connection-age"),
				Usage: "close connections after about this long (±10%) so Envoys spread over replicas; 0 means never. With content-hash versions a reconnect resends nothing"},
			&cli.DurationFlag{Category: catXDS, Name: "max-connection-age-grace", Value: defaultMaxConnectionAgeGrace, EnvVars: env("max-connection-age-grace"),
				Usage: "how long a connection past --max-connection-age keeps its streams before it is closed"},
			&cli.DurationFlag{Category: catXDS, Name: "keepalive-time", Value: defaultKeepaliveTime, EnvVars: env("keepalive-time"),
				Usage: "ping a client after this long without activity"},
			&cli.DurationFlag{Category: catXDS, Name: "keepalive-timeout", Value: defaultKeepaliveTimeout, EnvVars: env("keepalive-timeout"),
				Usage: "close a connection whose ping is not answered within this long"},
			&cli.DurationFlag{Category: catXDS, Name: "keepalive-min-time", Value: defaultKeepaliveMinTime, EnvVars: env("keepalive-min-time"),
				Usage: "the shortest interval between client pings allowed (Envoy's connection_keepalive.interval must not be shorter); faster pingers are disconnected"},
			&cli.IntFlag{Category: catXDS, Name: "max-subscriptions-per-stream", Value: delta.DefaultMaxNamesPerStream, EnvVars: env("max-subscriptions-per-stream"),
				Usage: "resource names one stream may subscribe to; more ends the stream with RESOURCE_EXHAUSTED"},
			&cli.IntFlag{Category: catXDS, Name: "max-response-bytes", Value: delta.DefaultMaxResponseBytes, EnvVars: env("max-response-bytes"),
				Usage: "resource bytes per response; larger batches are split (one resource is always sent)"},
			&cli.IntFlag{Category: catXDS, Name: "max-request-bytes", Value: delta.DefaultMaxRequestBytes, EnvVars: env("max-request-bytes"),
				Usage: "largest request accepted; larger ones end their stream with RESOURCE_EXHAUSTED"},
			&cli.Uint64Flag{Category: catXDS, Name: "max-concurrent-streams", Value: defaultMaxConcurrentStreams, EnvVars: env("max-concurrent-streams"),
				Usage: "concurrent gRPC streams per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS), 1 to 4294967295; a client's further streams wait until one ends. The default, 2^32-1, is gRPC's own: in effect no limit"},
			&cli.DurationFlag{Category: catXDS, Name: "ack-timeout", Value: 0, EnvVars: env("ack-timeout"),
				Usage: "end a Delta xDS stream with DEADLINE_EXCEEDED when a response is neither ACKed nor NACKed within this long (the client reconnects); 0 means never"},

			&cli.StringFlag{Category: catTLS, Name: "tls-cert-file", EnvVars: env("tls-cert-file"), DefaultText: "plaintext",
				Usage: "serve xDS over TLS with this certificate `FILE` (PEM; reloaded when it changes)"},
			&cli.StringFlag{Category: catTLS, Name: "tls-key-file", EnvVars: env("tls-key-file"),
				Usage: "private key `FILE` of --tls-cert-file (PEM)"},
			&cli.StringFlag{Category: catTLS, Name: "tls-client-ca-file", EnvVars: env("tls-client-ca-file"), DefaultText: "no client certificates",
				Usage: "require client certificates signed by this CA bundle `FILE` (mTLS)"},

			&cli.StringFlag{Category: catOps, Name: "admin-address", Value: defaultAdminAddress, EnvVars: env("admin-address"),
				Usage: "listen on `HOST:PORT` for /healthz, /readyz, /metrics and /debug/ (HTTP)"},
			&cli.DurationFlag{Category: catOps, Name: "shutdown-timeout", Value: defaultShutdownTimeout, EnvVars: env("shutdown-timeout"),
				Usage: "on SIGTERM, how long streams get to end before connections are cut"},
			&cli.StringFlag{Category: catOps, Name: "log-level", Value: "info", EnvVars: env("log-level"),
				Usage: "debug, info, warn or error"},
			&cli.StringFlag{Category: catOps, Name: "log-format", Value: "json", EnvVars: env("log-format"),
				Usage: "json or console"},
		},
		OnUsageError: onUsageError("serve "),
		Action:       serveAction,
	}
}

// serveConfigFromFlags reads and checks the flags. Its errors are usage
// errors.
func serveConfigFromFlags(c *cli.Context) (serveConfig, error) {
	if c.Args().Present() {
		return serveConfig{}, fmt.Errorf("unexpected argument %q", c.Args().First())
	}
	cfg := serveConfig{
		Kubeconfig:                c.String("kubeconfig"),
		KubeQPS:                   c.Float64("kube-qps"),
		KubeBurst:                 c.Int("kube-burst"),
		XDSAddress:                c.String("xds-address"),
		AdminAddress:              c.String("admin-address"),
		LabelSelector:             c.String("label-selector"),
		ServiceProxyName:          c.String("service-proxy-name"),
		IncludeUnready:            c.Bool("include-unready"),
		NodeLocality:              c.Bool("node-locality"),
		DeletedGracePeriod:        c.Duration("deleted-grace-period"),
		Workers:                   c.Int("workers"),
		ProbeInterval:             c.Duration("apiserver-probe-interval"),
		TLSCertFile:               c.String("tls-cert-file"),
		TLSKeyFile:                c.String("tls-key-file"),
		TLSClientCAFile:           c.String("tls-client-ca-file"),
		MaxConnectionAge:          c.Duration("max-connection-age"),
		MaxConnectionAgeGrace:     c.Duration("max-connection-age-grace"),
		KeepaliveTime:             c.Duration("keepalive-time"),
		KeepaliveTimeout:          c.Duration("keepalive-timeout"),
		KeepaliveMinTime:          c.Duration("keepalive-min-time"),
		MaxSubscriptionsPerStream: c.Int("max-subscriptions-per-stream"),
		MaxResponseBytes:          c.Int("max-response-bytes"),
		MaxRequestBytes:           c.Int("max-request-bytes"),
		MaxConcurrentStreams:      c.Uint64("max-concurrent-streams"),
		AckTimeout:                c.Duration("ack-timeout"),
		ShutdownTimeout:           c.Duration("shutdown-timeout"),
	}
	for _, ns := range c.StringSlice("namespace") {
		if ns = strings.TrimSpace(ns); ns != "" {
			cfg.Namespaces = append(cfg.Namespaces, ns)
		}
	}
	return cfg, cfg.validate()
}

func (cfg *serveConfig) validate() error {
	for _, a := range []struct{ flag, addr string }{{"--xds-address", cfg.XDSAddress}, {"--admin-address", cfg.AdminAddress}} {
		if err := checkListenAddress(a.addr); err != nil {
			return fmt.Errorf("%s %q: %v", a.flag, a.addr, err)
		}
	}
	for _, ns := range cfg.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("--namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	if cfg.LabelSelector != "" {
		if _, err := labels.Parse(cfg.LabelSelector); err != nil {
			return fmt.Errorf("--label-selector %q: %v", cfg.LabelSelector, err)
		}
	}
	if _, err := translate.ServedSelector("", cfg.ServiceProxyName); err != nil {
		return fmt.Errorf("--service-proxy-name: %v", err)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if cfg.TLSClientCAFile != "" && cfg.TLSCertFile == "" {
		return errors.New("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
	}
	positive := []struct {
		flag string
		d    time.Duration
	}{
		{"--deleted-grace-period", cfg.DeletedGracePeriod},
		{"--keepalive-time", cfg.KeepaliveTime},
		{"--keepalive-timeout", cfg.KeepaliveTimeout},
		{"--shutdown-timeout", cfg.ShutdownTimeout},
		{"--apiserver-probe-interval", cfg.ProbeInterval},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return fmt.Errorf("%s %v: must be positive", p.flag, p.d)
		}
	}
	nonNegative := []struct {
		flag string
		d    time.Duration
	}{
		{"--max-connection-age", cfg.MaxConnectionAge},
		{"--max-connection-age-grace", cfg.MaxConnectionAgeGrace},
		{"--keepalive-min-time", cfg.KeepaliveMinTime},
		{"--ack-timeout", cfg.AckTimeout},
	}
	for _, p := range nonNegative {
		if p.d < 0 {
			return fmt.Errorf("%s %v: must not be negative", p.flag, p.d)
		}
	}
	if cfg.KeepaliveTime < time.Second {
		return fmt.Errorf("--keepalive-time %v: must be at least 1s", cfg.KeepaliveTime)
	}
	ints := []struct {
		flag string
		v    int
	}{
		{"--max-subscriptions-per-stream", cfg.MaxSubscriptionsPerStream},
		{"--max-response-bytes", cfg.MaxResponseBytes},
		{"--max-request-bytes", cfg.MaxRequestBytes},
		{"--kube-burst", cfg.KubeBurst},
		{"--workers", cfg.Workers},
	}
	for _, i := range ints {
		if i.v <= 0 {
			return fmt.Errorf("%s %d: must be positive", i.flag, i.v)
		}
	}
	if cfg.MaxConcurrentStreams < 1 || cfg.MaxConcurrentStreams > math.MaxUint32 {
		return fmt.Errorf("--max-concurrent-streams %d: must be in 1..%d", cfg.MaxConcurrentStreams, uint64(math.MaxUint32))
	}
	if !(cfg.KubeQPS > 0) {
		return fmt.Errorf("--kube-qps %v: must be positive", cfg.KubeQPS)
	}
	return nil
}

func checkListenAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		return errors.New("the port must be a number in 0..65535")
	}
	return nil
}

// newLogger builds the process logger. Keys are stable: ts, level, logger,
// caller, msg, then the fields (node_id, cluster, type_url, nonce, ...).
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder
	switch format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(encoder, ws, lvl), zap.AddCaller(), zap.ErrorOutput(ws)), nil
}

func serveAction(c *cli.Context) error {
	cfg, err := serveConfigFromFlags(c)
	if err != nil {
		return usageError("serve: %v (see deltaeds serve --help)", err)
	}
	log, err := newLogger(c.String("log-level"), c.String("log-format"), c.App.ErrWriter)
	if err != nil {
		return usageError("serve: %v (see deltaeds serve --help)", err)
	}
	defer func() { _ = log.Sync() }() // flush; stderr may not support fsync
	// client-go logs through klog; send those lines to the same logger.
	klog.SetLogger(logr.New(&klogSink{log: log.Named("client-go")}))
	defer klog.ClearLogger()

	srv, err := newServer(cfg, log)
	if err != nil {
		return err
	}
	return srv.run(c.Context)
}

// server is one running deltaeds: every part, built and listening, by
// newServer; run serves until its context ends.
type server struct {
	cfg        serveConfig
	log        *zap.Logger
	httpClient interface{ CloseIdleConnections() }
	registry   *prometheus.Registry
	store      *xds.Store
	watcher    *watch.Watcher
	delta      *delta.Server
	grpc       *grpc.Server
	health     *healthServer
	admin      *admin.Server
	xdsLis     net.Listener
	adminLis   net.Listener
}

// newServer builds everything and opens both listeners, so that an
// unreadable file or a port in use is reported before anything runs. On
// error nothing is left open.
func newServer(cfg serveConfig, log *zap.Logger) (_ *server, err error) {
	if err := cfg.validate(); err != nil {
		return nil, usageError("serve: %v", err)
	}
	s := &server{cfg: cfg, log: log, registry: prometheus.NewRegistry(), store: xds.NewStore()}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()

	var tlsConfig *tls.Config
	if cfg.TLSCertFile != "" {
		tlsConfig, err = serverTLS(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile, log)
		if err != nil {
			return nil, err
		}
	}

	restConfig, source := cfg.RESTConfig, "given"
	if restConfig == nil {
		restConfig, source, err = bootstrap.LoadKubeconfig(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
	}
	restConfig = rest.CopyConfig(restConfig)
	restConfig.QPS = float32(cfg.KubeQPS)
	restConfig.Burst = cfg.KubeBurst
	restConfig.UserAgent = "deltaeds/" + version
	httpClient, err := rest.HTTPClientFor(restConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (%s config): %w", source, err)
	}
	s.httpClient = httpClient
	client, err := kubernetes.NewForConfigAndClient(restConfig, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (%s config): %w", source, err)
	}

	if s.xdsLis, err = net.Listen("tcp", cfg.XDSAddress); err != nil {
		return nil, fmt.Errorf("xDS listener --xds-address %s: %w", cfg.XDSAddress, err)
	}
	if s.adminLis, err = net.Listen("tcp", cfg.AdminAddress); err != nil {
		return nil, fmt.Errorf("admin listener --admin-address %s: %w", cfg.AdminAddress, err)
	}

	s.watcher, err = watch.New(watch.Config{
		Client:             client,
		Store:              s.store,
		Namespaces:         cfg.Namespaces,
		LabelSelector:      cfg.LabelSelector,
		ServiceProxyName:   cfg.ServiceProxyName,
		Translate:          translate.Options{IncludeUnready: cfg.IncludeUnready},
		NodeLocality:       cfg.NodeLocality,
		DeletedGracePeriod: cfg.DeletedGracePeriod,
		Workers:            cfg.Workers,
		ProbeInterval:      cfg.ProbeInterval,
		Logger:             log.Named("watch"),
		Metrics:            watch.NewMetrics(s.registry),
	})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	s.delta = delta.NewServer(s.store, delta.Options{
		Logger:            log.Named("xds"),
		Metrics:           delta.NewMetrics(s.registry),
		MaxResponseBytes:  cfg.MaxResponseBytes,
		MaxRequestBytes:   cfg.MaxRequestBytes,
		MaxNamesPerStream: cfg.MaxSubscriptionsPerStream,
		AckTimeout:        cfg.AckTimeout,
	})

	opts := append(s.delta.GRPCServerOptions(),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)), // validated: 1..math.MaxUint32
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  cfg.KeepaliveTime,
			Timeout:               cfg.KeepaliveTimeout,
			MaxConnectionAge:      cfg.MaxConnectionAge, // 0: never
			MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true, // Envoy pings idle connections too
		}),
	)
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	s.grpc = grpc.NewServer(opts...)
	s.delta.Register(s.grpc)
	s.health = newHealthServer()
	for _, name := range append([]string{""}, healthServices...) {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)

	s.admin, err = admin.New(admin.Config{
		Store:     s.store,
		Streams:   s.delta,
		Watcher:   s.watcher,
		Registry:  s.registry,
		BuildInfo: buildInfo(),
		Logger:    log.Named("admin"),
	})
	if err != nil {
		return nil, err
	}

	log.Info("configured",
		zap.String("version", version),
		zap.String("kubeconfig_source", source),
		zap.String("apiserver", restConfig.Host),
		zap.Strings("namespaces", cfg.Namespaces),
		zap.String("label_selector", cfg.LabelSelector),
		zap.Bool("tls", tlsConfig != nil),
		zap.Bool("mtls", cfg.TLSClientCAFile != ""))
	return s, nil
}

// closeAll releases what a newServer that failed half-way had opened.
func (s *server) closeAll() {
	for _, l := range []net.Listener{s.xdsLis, s.adminLis} {
		if l != nil {
			_ = l.Close()
		}
	}
	if s.httpClient != nil {
		s.httpClient.CloseIdleConnections()
	}
}

// run serves until ctx ends or a part fails, then stops everything within
// cfg.ShutdownTimeout: the health service goes NOT_SERVING (and its Watch
// streams end once they have said so, not to hold the graceful stop), every xDS
// stream ends with UNAVAILABLE (Envoys reconnect to another replica and,
// with content-hash versions, are resent nothing), gRPC stops gracefully
// (forcefully at the deadline), the watcher stops, and the admin server last.
func (s *server) run(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	errc := make(chan error, 3)
	var wg sync.WaitGroup

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.watcher.Run(watchCtx); err != nil && watchCtx.Err() == nil {
			errc <- fmt.Errorf("watch: %w", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.serveHealthWhenSynced(watchCtx)
	}()
	grpcDone := make(chan struct{})
	go func() {
		defer close(grpcDone)
		if err := s.grpc.Serve(s.xdsLis); err != nil {
			errc <- fmt.Errorf("xDS server on %s: %w", s.xdsLis.Addr(), err)
		}
	}()
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		if err := s.admin.Serve(s.adminLis); err != nil {
			errc <- err
		}
	}()
	s.log.Info("serving", zap.String("xds_address", s.xdsLis.Addr().String()),
		zap.String("admin_address", s.adminLis.Addr().String()))

	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("stopping", zap.Duration("deadline", s.cfg.ShutdownTimeout))
	case runErr = <-errc:
		s.log.Error("stopping after a failure", zap.Error(runErr))
	}

	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.health.Shutdown()
	if err := s.delta.Stop(sctx); err != nil {
		s.log.Warn("xDS streams did not end before the deadline", zap.Error(err))
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-sctx.Done():
		s.log.Warn("gRPC did not stop gracefully before the deadline; closing its connections")
		s.grpc.Stop()
		<-stopped
	}
	<-grpcDone

	stopWatch()
	wg.Wait()

	// The admin server gets a moment even when the deadline is spent, so
	// requests in flight are answered rather than cut.
	actx, acancel := context.WithTimeout(context.Background(), max(time.Until(deadlineOf(sctx)), time.Second))
	defer acancel()
	if err := s.admin.Shutdown(actx); err != nil {
		s.log.Warn("admin server did not stop cleanly", zap.Error(err))
	}
	<-adminDone
	s.httpClient.CloseIdleConnections()
	s.log.Info("stopped")
	return runErr
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// serveHealthWhenSynced flips the gRPC health status to SERVING once the
// watcher has synced; it never flips back, as readiness does not depend on
// the API server after that.
func (s *server) serveHealthWhenSynced(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !s.watcher.Synced() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	for _, name := range append([]string{""}, healthServices...) {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.log.Info("ready: serving xDS", zap.Int("clas", s.store.Len(xds.EndpointType)))
}

// serverTLS loads the serving certificate (reloaded when its files change)
// and, with a client CA, requires and verifies client certificates.
func serverTLS(certFile, keyFile, clientCAFile string, log *zap.Logger) (*tls.Config, error) {
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"h2"},
	}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca-file %s: no PEM certificate in it", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certReloader serves a key pair from files and reloads it, at most every
// certCheckInterval, when either file's modification time changes, so
// certificates rotated by cert-manager or a Secret update are picked up
// without a restart. A pair that fails to load is logged and the previous
// one kept.
type certReloader struct {
	certFile, keyFile string
	log               *zap.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	modTimes  [2]time.Time
	lastCheck time.Time
}

const certCheckInterval = 10 * time.Second

func newCertReloader(certFile, keyFile string, log *zap.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	mt, err := r.modTimesNow()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file %s / --tls-key-file %s: %w", certFile, keyFile, err)
	}
	r.cert, r.modTimes, r.lastCheck = &cert, mt, time.Now()
	return r, nil
}

func (r *certReloader) modTimesNow() ([2]time.Time, error) {
	var mt [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return mt, fmt.Errorf("TLS: %w", err)
		}
		mt[i] = st.ModTime()
	}
	return mt, nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) < certCheckInterval {
		return r.cert, nil
	}
	r.lastCheck = time.Now()
	mt, err := r.modTimesNow()
	if err != nil || mt == r.modTimes {
		if err != nil {
			r.log.Warn("cannot check the TLS certificate files; keeping the loaded certificate", zap.Error(err))
		}
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Maybe caught between the two files' updates: retry next check.
		r.log.Warn("cannot reload the TLS certificate; keeping the loaded one", zap.Error(err))
		return r.cert, nil
	}
	r.cert, r.modTimes = &cert, mt
	r.log.Info("reloaded the TLS certificate", zap.String("file", r.certFile))
	return r.cert, nil
}

// klogSink sends client-go's klog output to zap: V(0) at info, higher
// verbosities at debug (klog itself drops them unless -v is raised).
type klogSink struct {
	log *zap.Logger
}

func (k *klogSink) Init(logr.RuntimeInfo) {}

func (k *klogSink) Enabled(level int) bool {
	if level > 0 {
		return k.log.Core().Enabled(zapcore.DebugLevel)
	}
	return k.log.Core().Enabled(zapcore.InfoLevel)
}

func (k *klogSink) Info(level int, msg string, kv ...any) {
	if level > 0 {
		k.log.Debug(msg, fields(kv)...)
		return
	}
	k.log.Info(msg, fields(kv)...)
}

func (k *klogSink) Error(err error, msg string, kv ...any) {
	k.log.Error(msg, append(fields(kv), zap.Error(err))...)
}

func (k *klogSink) WithValues(kv ...any) logr.LogSink {
	return &klogSink{log: k.log.With(fields(kv)...)}
}

func (k *klogSink) WithName(name string) logr.LogSink {
	return &klogSink{log: k.log.Named(name)}
}

func fields(kv []any) []zap.Field {
	out := make([]zap.Field, 0, len(kv)/2+1)
	for i := 0; i+1 < len(kv); i += 2 {
		key, ok := kv[i].(string)
		if !ok {
			key = fmt.Sprint(kv[i])
		}
		out = append(out, zap.Any(key, kv[i+1]))
	}
	if len(kv)%2 == 1 {
		out = append(out, zap.Any("extra", kv[len(kv)-1]))
	}
	return out
}
