package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// EnvPrefix prefixes the environment variable of every flag of Command, so
// that they cannot be confused with those of `deltaeds serve`.
const EnvPrefix = "DELTAEDS_BOOTSTRAP_"

// ExitUsage is the exit code of a usage error.
const ExitUsage = 2

// Default values of the command's flags.
const (
	DefaultServer       = "deltaeds.deltaeds.svc.cluster.local:18000"
	DefaultNodeID       = "envoy"
	DefaultNodeCluster  = "envoy"
	DefaultAdminAddress = "127.0.0.1:9901"
)

func env(flag string) []string {
	return []string{EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// Command returns `deltaeds bootstrap`. It writes to the App's Writer unless
// --output names a file. Bad flags are returned as cli.Exit errors with code
// ExitUsage; the caller prints them.
func Command() *cli.Command {
	cmd := &cli.Command{
		Name:      "bootstrap",
		Usage:     "write an Envoy bootstrap that gets endpoints from deltaeds over Delta ADS",
		UsageText: "deltaeds bootstrap --xds-server HOST:PORT {--cluster NAMESPACE/SERVICE[/PORT] [--cluster ...] | --from-cluster [--exclude PATTERN ...]} [options]",
		Description: "Writes a static Envoy bootstrap: a cluster for deltaeds (HTTP/2, optional TLS client\n" +
			"certificate), ADS with api_type DELTA_GRPC, one EDS cluster per --cluster (named, and\n" +
			"served, as NAMESPACE/SERVICE/PORT, or NAMESPACE/SERVICE for an unnamed port), the node\n" +
			"and an admin listener. Envoy's --service-node, --service-cluster and --service-zone\n" +
			"override the node flags, so one bootstrap can serve a whole fleet.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "xds-server", Value: DefaultServer, EnvVars: env("xds-server"),
				Usage: "deltaeds' address as the Envoys reach it, `HOST:PORT`"},
			&cli.StringSliceFlag{Name: "cluster", EnvVars: env("cluster"),
				Usage: "an EDS cluster for a Service port, `NAMESPACE/SERVICE[/PORT]` (repeatable; comma-separated in the environment)"},
			&cli.StringFlag{Name: "node-id", Value: DefaultNodeID, EnvVars: env("node-id"), Usage: "node.id"},
			&cli.StringFlag{Name: "node-cluster", Value: DefaultNodeCluster, EnvVars: env("node-cluster"), Usage: "node.cluster"},
			&cli.StringFlag{Name: "node-region", EnvVars: env("node-region"),
				Usage: "node.locality.region; set it exactly when deltaeds serves with --node-locality (only then do its CLAs carry regions, and Envoy matches region and zone together)"},
			&cli.StringFlag{Name: "node-zone", EnvVars: env("node-zone"),
				Usage: "node.locality.zone (Envoy's --service-zone overrides it): deltaeds serves this Envoy the endpoints hinted for its zone first"},
			&cli.StringFlag{Name: "node-name", EnvVars: env("node-name"),
				Usage: "the Kubernetes node `NAME` the Envoy runs on, written as node.metadata[--node-name-metadata-key] (per pod, e.g. from the downward API's spec.nodeName; a fleet-wide bootstrap leaves it out and passes it with Envoy's --config-yaml): deltaeds then applies node hints and internalTrafficPolicy Local, and under --zone-from-node finds the zone"},
			&cli.StringFlag{Name: "node-name-metadata-key", Value: NodeNameMetadataKey, EnvVars: env("node-name-metadata-key"),
				Usage: "the node.metadata field --node-name is written in; must equal deltaeds serve's --node-name-metadata-key"},
			&cli.StringFlag{Name: "node-sub-zone", EnvVars: env("node-sub-zone"),
				Usage: "node.locality.sub_zone: refused, deltaeds' CLAs carry none (kept so that the error says why)"},
			&cli.StringFlag{Name: "envoy-admin-address", Value: DefaultAdminAddress, EnvVars: env("envoy-admin-address"),
				Usage: "Envoy's admin listener, `IP:PORT`"},
			&cli.StringFlag{Name: "tls-ca-file", EnvVars: env("tls-ca-file"),
				Usage: "enables TLS to deltaeds: CA bundle verifying its certificate (a `PATH` inside the Envoy container)"},
			&cli.StringFlag{Name: "tls-cert-file", EnvVars: env("tls-cert-file"),
				Usage: "client certificate Envoy presents to deltaeds (mTLS; a `PATH` inside the Envoy container)"},
			&cli.StringFlag{Name: "tls-key-file", EnvVars: env("tls-key-file"),
				Usage: "key of --tls-cert-file (a `PATH` inside the Envoy container)"},
			&cli.StringFlag{Name: "tls-server-name", EnvVars: env("tls-server-name"), DefaultText: "the host of --xds-server",
				Usage: "SNI sent to deltaeds and the SAN its certificate must carry"},
			&cli.DurationFlag{Name: "connect-timeout", Value: DefaultConnectTimeout, EnvVars: env("connect-timeout"),
				Usage: "connect_timeout of every cluster"},
			&cli.DurationFlag{Name: "keepalive-interval", Value: DefaultKeepaliveInterval, EnvVars: env("keepalive-interval"),
				Usage: "HTTP/2 PING interval on the connection to deltaeds (deltaeds' --keepalive-min-time must not exceed it)"},
			&cli.DurationFlag{Name: "keepalive-timeout", Value: DefaultKeepaliveTimeout, EnvVars: env("keepalive-timeout"),
				Usage: "how long Envoy waits for a PING ACK before it drops the connection to deltaeds"},
			&cli.StringFlag{Name: "format", Value: string(YAML), EnvVars: env("format"), Usage: "output format, yaml or json"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", EnvVars: env("output"),
				Usage: "file to write, `PATH` (- for standard output)"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return cli.Exit(fmt.Sprintf("bootstrap: %v (see deltaeds bootstrap --help)", err), ExitUsage)
		},
		Action: run,
	}
	cmd.Flags = append(cmd.Flags, fromClusterFlags()...)
	cmd.Flags = append(cmd.Flags, mergeFlags()...)
	return cmd
}

func usage(format string, args ...any) error {
	return cli.Exit("bootstrap: "+fmt.Sprintf(format, args...)+" (see deltaeds bootstrap --help)", ExitUsage)
}

// OptionsFromFlags reads Options and the output format from a context of
// Command's flags. It does not list --from-cluster's clusters: with that flag
// Options.Clusters holds only the --cluster ones, and may be empty.
func OptionsFromFlags(c *cli.Context) (Options, Format, error) {
	if c.Args().Present() {
		return Options{}, "", fmt.Errorf("unexpected argument %q", c.Args().First())
	}
	format, err := ParseFormat(c.String("format"))
	if err != nil {
		return Options{}, "", err
	}
	opts := Options{
		Server:      c.String("xds-server"),
		NodeID:      c.String("node-id"),
		NodeCluster: c.String("node-cluster"),
		Locality: Locality{
			Region:  c.String("node-region"),
			Zone:    c.String("node-zone"),
			SubZone: c.String("node-sub-zone"),
		},
		NodeName:            c.String("node-name"),
		NodeNameMetadataKey: c.String("node-name-metadata-key"),
		AdminAddress:        c.String("envoy-admin-address"),
		ConnectTimeout:      c.Duration("connect-timeout"),
		KeepaliveInterval:   c.Duration("keepalive-interval"),
		KeepaliveTimeout:    c.Duration("keepalive-timeout"),
	}
	for _, s := range c.StringSlice("cluster") {
		cl, err := ParseCluster(strings.TrimSpace(s))
		if err != nil {
			return Options{}, "", err
		}
		opts.Clusters = append(opts.Clusters, cl)
	}
	if len(opts.Clusters) == 0 && !c.Bool("from-cluster") && c.String("merge") == "" {
		return Options{}, "", errors.New("at least one --cluster NAMESPACE/SERVICE[/PORT] (or --from-cluster) is required")
	}
	if c.Duration("connect-timeout") <= 0 {
		return Options{}, "", fmt.Errorf("--connect-timeout %v: must be positive", c.Duration("connect-timeout"))
	}
	tls := &TLS{
		CAFile:     c.String("tls-ca-file"),
		CertFile:   c.String("tls-cert-file"),
		KeyFile:    c.String("tls-key-file"),
		ServerName: c.String("tls-server-name"),
	}
	if *tls != (TLS{}) {
		if tls.CAFile == "" {
			return Options{}, "", errors.New("--tls-cert-file, --tls-key-file and --tls-server-name need --tls-ca-file to verify deltaeds")
		}
		if (tls.CertFile == "") != (tls.KeyFile == "") {
			return Options{}, "", errors.New("--tls-cert-file and --tls-key-file go together")
		}
		opts.TLS = tls
	}
	return opts, format, nil
}

func run(c *cli.Context) error {
	if mergeRequested(c) {
		return runMerge(c)
	}
	opts, format, err := OptionsFromFlags(c)
	if err != nil {
		return usage("%v", err)
	}
	if opts, err = addClustersFromCluster(c, opts); err != nil {
		return err
	}
	b, err := Build(opts)
	if err != nil {
		return usage("%v", err)
	}
	out, err := Marshal(b, format)
	if err != nil {
		return err
	}
	path := c.String("output")
	if path == "-" || path == "" {
		if _, err := c.App.Writer.Write(out); err != nil {
			return fmt.Errorf("bootstrap: write: %w", err)
		}
		return nil
	}
	return writeFile(path, out)
}

// writeFile replaces path atomically, so an Envoy (re)starting meanwhile
// never reads half a bootstrap.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".bootstrap-*")
	if err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", path, err)
	}
	return nil
}
