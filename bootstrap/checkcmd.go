package bootstrap

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// CheckEnvPrefix prefixes the environment variables of CheckCommand's flags.
const CheckEnvPrefix = "DELTAEDS_CHECK_"

// ExitFindings is the exit code of `deltaeds check` when it found problems
// (or could not read what it checks).
const ExitFindings = 1

func checkEnv(flag string) []string {
	return []string{CheckEnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// CheckCommand returns `deltaeds check BOOTSTRAP`: it lints a bootstrap
// against deltaeds' rules and, unless --offline, against the names the
// cluster's EndpointSlices publish. It prints one line per finding to the
// App's Writer and exits 0 when there is none, 1 otherwise (or when the
// bootstrap or the API server cannot be read), 2 on bad flags.
func CheckCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "lint an Envoy bootstrap meant to get endpoints from deltaeds",
		UsageText: "deltaeds check [--kubeconfig FILE] [--namespace NS ...] [--offline] BOOTSTRAP",
		Description: "Checks that the bootstrap (YAML or JSON) uses ADS with api_type DELTA_GRPC through a\n" +
			"static cluster that speaks HTTP/2 and pings no faster than deltaeds' --keepalive-min-time,\n" +
			"and that every EDS cluster fed by ADS asks for a name deltaeds publishes, as listed from\n" +
			"the cluster's EndpointSlices (with suggestions for near misses). One line per finding;\n" +
			"exit 0 when there is none, 1 when there are (or the bootstrap or the API server cannot be\n" +
			"read), 2 on bad flags.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kubeconfig", EnvVars: checkEnv("kubeconfig"),
				DefaultText: "in-cluster config, else $KUBECONFIG, else ~/.kube/config",
				Usage:       "reach the API server with this kubeconfig `FILE`"},
			&cli.StringSliceFlag{Name: "namespace", EnvVars: checkEnv("namespace"), DefaultText: "all namespaces",
				Usage: "the names deltaeds publishes are those of this `NAMESPACE` (repeatable), as with serve's --namespace"},
			&cli.StringFlag{Name: "label-selector", EnvVars: checkEnv("label-selector"), DefaultText: "every EndpointSlice",
				Usage: "as serve's --label-selector"},
			&cli.StringFlag{Name: "service-proxy-name", EnvVars: checkEnv("service-proxy-name"), DefaultText: "none, as serve",
				Usage: "as serve's --service-proxy-name `NAME`"},
			&cli.BoolFlag{Name: "offline", EnvVars: checkEnv("offline"),
				Usage: "do not ask the API server; the names of the EDS clusters are not checked"},
			&cli.DurationFlag{Name: "keepalive-min-time", Value: DefaultServeKeepaliveMinTime, EnvVars: checkEnv("keepalive-min-time"),
				Usage: "the serving deltaeds' --keepalive-min-time"},
			&cli.BoolFlag{Name: "node-locality", EnvVars: checkEnv("node-locality"),
				Usage: "the serving deltaeds runs with --node-locality (its CLAs carry regions): the node must declare its region"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return checkUsage("%v", err)
		},
		Action: runCheck,
	}
}

func runCheck(c *cli.Context) error {
	if c.NArg() != 1 {
		return checkUsage("want one BOOTSTRAP file, got %d arguments", c.NArg())
	}
	if c.Duration("keepalive-min-time") <= 0 {
		return checkUsage("--keepalive-min-time must be positive")
	}
	q, err := parseClusterQuery(c)
	if err != nil {
		return checkUsage("%v", err)
	}
	file := c.Args().First()
	data, err := os.ReadFile(file)
	if err != nil {
		return cli.Exit(fmt.Sprintf("check: %v", err), ExitFindings)
	}
	b, err := ReadBootstrap(file, data)
	if err != nil {
		return cli.Exit(fmt.Sprintf("check: %v", err), ExitFindings)
	}
	opts := CheckOptions{KeepaliveMinTime: c.Duration("keepalive-min-time"), NodeLocality: c.Bool("node-locality")}
	if !c.Bool("offline") {
		found, _, err := listFromKubeconfig(c, q)
		if err != nil {
			return cli.Exit(fmt.Sprintf("check: listing the names deltaeds publishes (or pass --offline): %v", err), ExitFindings)
		}
		opts.Published = make([]string, 0, len(found))
		for _, cl := range found {
			opts.Published = append(opts.Published, cl.Name())
		}
	}
	findings := Check(b, opts)
	var lines strings.Builder
	for _, f := range findings {
		fmt.Fprintf(&lines, "%s: %s\n", file, f)
	}
	if _, err := fmt.Fprint(c.App.Writer, lines.String()); err != nil {
		return err
	}
	if len(findings) > 0 {
		return cli.Exit(fmt.Sprintf("check: %s: %d finding(s)", file, len(findings)), ExitFindings)
	}
	return nil
}

func checkUsage(format string, args ...any) error {
	return cli.Exit("check: "+fmt.Sprintf(format, args...)+" (see deltaeds check --help)", ExitUsage)
}
