package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/delta"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/watch"
)

// serveConfig is everything `deltaeds serve` needs. The flags of
// serveFlags write into it.
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

	Namespaces       []string
	LabelSelector    string
	ServiceProxyName string
	IncludeUnready   bool
	NodeLocality     bool
	// ZoneFromNode runs the Node informer so that a client telling only its
	// node name gets its zone from the Node's label.
	ZoneFromNode bool
	// InternalTrafficPolicy watches Services for internalTrafficPolicy.
	InternalTrafficPolicy bool
	// IPFamily is --ip-family as given: ipv4, ipv6 or dual
	// (translate.ParseIPFamily).
	IPFamily           string
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
	// NodeNameMetadataKey is the node.metadata field holding a client's
	// Kubernetes node name; "" reads none.
	NodeNameMetadataKey string
	// AckTimeout ends a stream whose response waits longer for its ACK or
	// NACK; 0 means never.
	AckTimeout time.Duration

	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
}

// The flag names that other files' messages name.
const (
	flagTLSCert     = "tls-cert-file"
	flagTLSKey      = "tls-key-file"
	flagTLSClientCA = "tls-client-ca-file"
	flagXDSAddress  = "xds-address"
	flagAdminAddr   = "admin-address"
	flagLogLevel    = "log-level"
	flagLogFormat   = "log-format"
)

// serveFlag is one flag of `deltaeds serve` and the check of its value.
type serveFlag struct {
	cli.Flag
	// check returns a usage error naming the flag ("--NAME"); nil accepts
	// every value the flag parses.
	check func(name string) error
}

// serveFlags is the one table of `deltaeds serve`'s flags: each is written
// here once, with its default, its help and its check, and parses into its
// field of cfg. Every flag's environment variable is DELTAEDS_ and its name
// in capitals (see env).
func serveFlags(cfg *serveConfig, namespaces *cli.StringSlice) []serveFlag {
	const (
		catKube = "Kubernetes:"
		catXDS  = "xDS server:"
		catTLS  = "TLS:"
		catOps  = "Operations:"
	)
	return []serveFlag{
		{&cli.StringFlag{Category: catKube, Name: "kubeconfig", Destination: &cfg.Kubeconfig,
			DefaultText: "in-cluster config, else $KUBECONFIG, else ~/.kube/config",
			Usage:       "reach the API server with this kubeconfig `FILE`"}, nil},
		{&cli.StringSliceFlag{Category: catKube, Name: "namespace", Destination: namespaces, DefaultText: "all namespaces",
			Usage: "watch only this `NAMESPACE` (repeatable; comma-separated in the environment)"},
			func(name string) error {
				for _, ns := range cfg.Namespaces {
					if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
						return fmt.Errorf("%s %q: %s", name, ns, strings.Join(errs, "; "))
					}
				}
				return nil
			}},
		{&cli.StringFlag{Category: catKube, Name: "label-selector", Destination: &cfg.LabelSelector, DefaultText: "every EndpointSlice",
			Usage: "watch only the EndpointSlices matching this label `SELECTOR`"},
			func(name string) error {
				if cfg.LabelSelector == "" {
					return nil
				}
				if _, err := labels.Parse(cfg.LabelSelector); err != nil {
					return fmt.Errorf("%s %q: %v", name, cfg.LabelSelector, err)
				}
				return nil
			}},
		{&cli.StringFlag{Category: catKube, Name: "service-proxy-name", Destination: &cfg.ServiceProxyName, DefaultText: "none: like kube-proxy, skip Services labelled service.kubernetes.io/service-proxy-name",
			Usage: "serve exactly the Services labelled service.kubernetes.io/service-proxy-name=`NAME` (handed to deltaeds, as kube-proxy alternatives are)"},
			func(name string) error {
				if _, err := translate.ServedSelector("", cfg.ServiceProxyName); err != nil {
					return fmt.Errorf("%s: %v", name, err)
				}
				return nil
			}},
		{&cli.BoolFlag{Category: catKube, Name: "include-unready", Destination: &cfg.IncludeUnready,
			Usage: "also send endpoints that are neither ready nor terminating-but-serving, as UNHEALTHY at priority 2 (after the terminating fallback): visible in Envoy's admin, never carrying traffic while a ready or terminating endpoint is healthy"}, nil},
		{&cli.BoolFlag{Category: catKube, Name: "node-locality", Destination: &cfg.NodeLocality,
			Usage: "watch Nodes (cluster-scoped get/list/watch) and put each endpoint's region, from its Node's topology.kubernetes.io/region label, in its CLA locality next to the zone, so that Envoys whose bootstrap sets node.locality.region find their local hosts"}, nil},
		{&cli.BoolFlag{Category: catKube, Name: "zone-from-node", Destination: &cfg.ZoneFromNode,
			Usage: "watch Nodes (cluster-scoped get/list/watch; one informer with --node-locality) so that an Envoy that tells its node name (--node-name-metadata-key) but no node.locality.zone is served the endpoints for the zone of its Node's topology.kubernetes.io/zone label. The zone is read when the stream starts and kept for its life"}, nil},
		{&cli.BoolFlag{Category: catKube, Name: "internal-traffic-policy", Destination: &cfg.InternalTrafficPolicy,
			Usage: "watch Services (get/list/watch in the watched namespaces) and honour internalTrafficPolicy: Local, as kube-proxy does: an Envoy that tells its node name gets only the endpoints on its node (none: an empty CLA). Without it every Service is served as Cluster"}, nil},
		{&cli.StringFlag{Category: catKube, Name: "ip-family", Value: translate.IPFamilyDual.String(), Destination: &cfg.IPFamily,
			Usage: "address families served: ipv4, ipv6 or dual. dual (the default) is what a dual-stack cluster's Envoys can use, every pod and node having both families, and serves the one family of a single-stack cluster: a pod in both is one endpoint, its IPv4 address with the IPv6 one in additional_addresses (Envoy connects with Happy Eyeballs). ipv4 or ipv6 is for Envoys with one family only; the other family's EndpointSlices are ignored and counted"},
			func(name string) error {
				if _, err := translate.ParseIPFamily(cfg.IPFamily); err != nil {
					return fmt.Errorf("%s: %v", name, err)
				}
				return nil
			}},
		{&cli.DurationFlag{Category: catKube, Name: "deleted-grace-period", Value: watch.DefaultDeletedGracePeriod, Destination: &cfg.DeletedGracePeriod,
			Usage: "how long a CLA whose Service or port is gone stays published, empty, before it is removed"},
			positive(&cfg.DeletedGracePeriod)},
		{&cli.Float64Flag{Category: catKube, Name: "kube-qps", Value: 20, Destination: &cfg.KubeQPS,
			Usage: "queries per second to the API server"},
			func(name string) error {
				if !(cfg.KubeQPS > 0) {
					return fmt.Errorf("%s %v: must be positive", name, cfg.KubeQPS)
				}
				return nil
			}},
		{&cli.IntFlag{Category: catKube, Name: "kube-burst", Value: 40, Destination: &cfg.KubeBurst,
			Usage: "burst of queries to the API server"},
			positiveInt(&cfg.KubeBurst)},
		{&cli.DurationFlag{Category: catKube, Name: "apiserver-probe-interval", Value: watch.DefaultProbeInterval, Destination: &cfg.ProbeInterval,
			Usage: "how often the API server's /readyz is probed to report its health"},
			positive(&cfg.ProbeInterval)},
		{&cli.IntFlag{Category: catKube, Name: "workers", Value: watch.DefaultWorkers, Destination: &cfg.Workers,
			Usage: "Services translated concurrently"},
			positiveInt(&cfg.Workers)},

		{&cli.StringFlag{Category: catXDS, Name: flagXDSAddress, Value: ":18000", Destination: &cfg.XDSAddress,
			Usage: "listen on `HOST:PORT` for Delta xDS and grpc.health.v1 (gRPC)"},
			listenAddress(&cfg.XDSAddress)},
		{&cli.DurationFlag{Category: catXDS, Name: "max-connection-age", Value: 30 * time.Minute, Destination: &cfg.MaxConnectionAge,
			Usage: "close connections after about this long (±10%) so Envoys spread over replicas; 0 means never. With content-hash versions a reconnect resends nothing"},
			nonNegative(&cfg.MaxConnectionAge)},
		{&cli.DurationFlag{Category: catXDS, Name: "max-connection-age-grace", Value: time.Minute, Destination: &cfg.MaxConnectionAgeGrace,
			Usage: "how long a connection past --max-connection-age keeps its streams before it is closed"},
			nonNegative(&cfg.MaxConnectionAgeGrace)},
		{&cli.DurationFlag{Category: catXDS, Name: "keepalive-time", Value: time.Minute, Destination: &cfg.KeepaliveTime,
			Usage: "ping a client after this long without activity"},
			func(name string) error {
				if err := positive(&cfg.KeepaliveTime)(name); err != nil {
					return err
				}
				if cfg.KeepaliveTime < time.Second {
					return fmt.Errorf("%s %v: must be at least 1s", name, cfg.KeepaliveTime)
				}
				return nil
			}},
		{&cli.DurationFlag{Category: catXDS, Name: "keepalive-timeout", Value: 20 * time.Second, Destination: &cfg.KeepaliveTimeout,
			Usage: "close a connection whose ping is not answered within this long"},
			positive(&cfg.KeepaliveTimeout)},
		{&cli.DurationFlag{Category: catXDS, Name: "keepalive-min-time", Value: 10 * time.Second, Destination: &cfg.KeepaliveMinTime,
			Usage: "the shortest interval between client pings allowed (Envoy's connection_keepalive.interval must not be shorter); faster pingers are disconnected"},
			nonNegative(&cfg.KeepaliveMinTime)},
		{&cli.IntFlag{Category: catXDS, Name: "max-subscriptions-per-stream", Value: delta.DefaultMaxNamesPerStream, Destination: &cfg.MaxSubscriptionsPerStream,
			Usage: "resource names one stream may subscribe to; more ends the stream with RESOURCE_EXHAUSTED"},
			positiveInt(&cfg.MaxSubscriptionsPerStream)},
		{&cli.IntFlag{Category: catXDS, Name: "max-response-bytes", Value: delta.DefaultMaxResponseBytes, Destination: &cfg.MaxResponseBytes,
			Usage: "resource bytes per response; larger batches are split (one resource is always sent)"},
			positiveInt(&cfg.MaxResponseBytes)},
		{&cli.IntFlag{Category: catXDS, Name: "max-request-bytes", Value: delta.DefaultMaxRequestBytes, Destination: &cfg.MaxRequestBytes,
			Usage: "largest request accepted; larger ones end their stream with RESOURCE_EXHAUSTED"},
			positiveInt(&cfg.MaxRequestBytes)},
		// gRPC's default when no limit is set: math.MaxUint32.
		{&cli.Uint64Flag{Category: catXDS, Name: "max-concurrent-streams", Value: math.MaxUint32, Destination: &cfg.MaxConcurrentStreams,
			Usage: "concurrent gRPC streams per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS), 1 to 4294967295; a client's further streams wait until one ends. The default, 2^32-1, is gRPC's own: in effect no limit"},
			func(name string) error {
				if cfg.MaxConcurrentStreams < 1 || cfg.MaxConcurrentStreams > math.MaxUint32 {
					return fmt.Errorf("%s %d: must be in 1..%d", name, cfg.MaxConcurrentStreams, uint64(math.MaxUint32))
				}
				return nil
			}},
		{&cli.StringFlag{Category: catXDS, Name: "node-name-metadata-key", Value: delta.DefaultNodeNameMetadataKey, Destination: &cfg.NodeNameMetadataKey,
			Usage: "the node.metadata field in which an Envoy tells the name of the Kubernetes node it runs on (deltaeds bootstrap --node-name writes it); with node.locality.zone it chooses the CLA variant the Envoy gets (topology hints, internalTrafficPolicy). \"\" reads none"}, nil},
		{&cli.DurationFlag{Category: catXDS, Name: "ack-timeout", Value: 0, Destination: &cfg.AckTimeout,
			Usage: "end a Delta xDS stream with DEADLINE_EXCEEDED when a response is neither ACKed nor NACKed within this long (the client reconnects); 0 means never"},
			nonNegative(&cfg.AckTimeout)},

		{&cli.StringFlag{Category: catTLS, Name: flagTLSCert, Destination: &cfg.TLSCertFile, DefaultText: "plaintext",
			Usage: "serve xDS over TLS with this certificate `FILE` (PEM; reloaded when it changes)"}, nil},
		{&cli.StringFlag{Category: catTLS, Name: flagTLSKey, Destination: &cfg.TLSKeyFile,
			Usage: "private key `FILE` of --tls-cert-file (PEM)"},
			func(string) error {
				if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
					return fmt.Errorf("--%s and --%s go together", flagTLSCert, flagTLSKey)
				}
				return nil
			}},
		{&cli.StringFlag{Category: catTLS, Name: flagTLSClientCA, Destination: &cfg.TLSClientCAFile, DefaultText: "no client certificates",
			Usage: "require client certificates signed by this CA bundle `FILE` (mTLS; reloaded when it changes)"},
			func(name string) error {
				if cfg.TLSClientCAFile != "" && cfg.TLSCertFile == "" {
					return fmt.Errorf("%s needs --%s and --%s", name, flagTLSCert, flagTLSKey)
				}
				return nil
			}},

		{&cli.StringFlag{Category: catOps, Name: flagAdminAddr, Value: "127.0.0.1:18001", Destination: &cfg.AdminAddress,
			Usage: "listen on `HOST:PORT` for /healthz, /readyz, /metrics and /debug/ (HTTP)"},
			listenAddress(&cfg.AdminAddress)},
		{&cli.DurationFlag{Category: catOps, Name: "shutdown-timeout", Value: 20 * time.Second, Destination: &cfg.ShutdownTimeout,
			Usage: "on SIGTERM, how long streams get to end before connections are cut"},
			positive(&cfg.ShutdownTimeout)},
		{&cli.StringFlag{Category: catOps, Name: flagLogLevel, Value: "info", Destination: &cfg.LogLevel,
			Usage: "debug, info, warn or error"},
			func(name string) error {
				if _, err := zapcore.ParseLevel(cfg.LogLevel); err != nil {
					return fmt.Errorf("%s %q: want debug, info, warn or error", name, cfg.LogLevel)
				}
				return nil
			}},
		{&cli.StringFlag{Category: catOps, Name: flagLogFormat, Value: "json", Destination: &cfg.LogFormat,
			Usage: "json or console"},
			func(name string) error {
				if cfg.LogFormat != "json" && cfg.LogFormat != "console" {
					return fmt.Errorf("%s %q: want json or console", name, cfg.LogFormat)
				}
				return nil
			}},
	}
}

// cliFlags returns the flags for urfave/cli, each with its environment
// variable.
func cliFlags(table []serveFlag) []cli.Flag {
	out := make([]cli.Flag, 0, len(table))
	for _, f := range table {
		env := []string{"DELTAEDS_" + strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_"))}
		switch f := f.Flag.(type) {
		case *cli.StringFlag:
			f.EnvVars = env
		case *cli.StringSliceFlag:
			f.EnvVars = env
		case *cli.BoolFlag:
			f.EnvVars = env
		case *cli.DurationFlag:
			f.EnvVars = env
		case *cli.IntFlag:
			f.EnvVars = env
		case *cli.Float64Flag:
			f.EnvVars = env
		case *cli.Uint64Flag:
			f.EnvVars = env
		default:
			panic(fmt.Sprintf("serveFlags: no environment variable for a %T", f))
		}
		out = append(out, f.Flag)
	}
	return out
}

// validate checks every field against its flag's rule; the error names the
// flag.
func (cfg serveConfig) validate() error {
	for _, f := range serveFlags(&cfg, new(cli.StringSlice)) {
		if f.check == nil {
			continue
		}
		if err := f.check("--" + f.Names()[0]); err != nil {
			return err
		}
	}
	return nil
}

func positive(d *time.Duration) func(string) error {
	return func(name string) error {
		if *d <= 0 {
			return fmt.Errorf("%s %v: must be positive", name, *d)
		}
		return nil
	}
}

func nonNegative(d *time.Duration) func(string) error {
	return func(name string) error {
		if *d < 0 {
			return fmt.Errorf("%s %v: must not be negative", name, *d)
		}
		return nil
	}
}

func positiveInt(v *int) func(string) error {
	return func(name string) error {
		if *v <= 0 {
			return fmt.Errorf("%s %d: must be positive", name, *v)
		}
		return nil
	}
}

func listenAddress(addr *string) func(string) error {
	return func(name string) error {
		_, port, err := net.SplitHostPort(*addr)
		if err != nil {
			return fmt.Errorf("%s %q: %w", name, *addr, errors.New("want HOST:PORT"))
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
			return fmt.Errorf("%s %q: the port must be a number in 0..65535", name, *addr)
		}
		return nil
	}
}

// serveCommand is `deltaeds serve`: it parses the flags into a serveConfig
// and runs serve with it.
func serveCommand() *cli.Command {
	var (
		cfg        serveConfig
		namespaces cli.StringSlice
	)
	return &cli.Command{
		Name:      "serve",
		Usage:     "watch EndpointSlices and serve them to Envoy over Delta xDS",
		UsageText: "deltaeds serve [--kubeconfig FILE] [--xds-address HOST:PORT] [--admin-address HOST:PORT] [options]",
		Description: "Every flag can also be set with the environment variable shown next to it.\n" +
			"SIGTERM or SIGINT stops it gracefully within --shutdown-timeout; a second signal stops it at once.",
		Flags:        cliFlags(serveFlags(&cfg, &namespaces)),
		OnUsageError: onUsageError("serve "),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError("serve: unexpected argument %q (see deltaeds serve --help)", c.Args().First())
			}
			for _, ns := range namespaces.Value() {
				if ns = strings.TrimSpace(ns); ns != "" {
					cfg.Namespaces = append(cfg.Namespaces, ns)
				}
			}
			if err := cfg.validate(); err != nil {
				return usageError("serve: %v (see deltaeds serve --help)", err)
			}
			return serve(c.Context, cfg, c.App.ErrWriter)
		},
	}
}
