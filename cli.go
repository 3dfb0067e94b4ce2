package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/deltaeds/deltaeds/bootstrap"
)

// Exit codes.
const (
	exitError = 1
	exitUsage = 2
)

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
	return &cli.App{
		Name:  "deltaeds",
		Usage: "serve Kubernetes EndpointSlices to Envoy over Delta xDS (incremental EDS)",
		Description: "deltaeds watches EndpointSlices and serves each Service port as an Envoy\n" +
			"ClusterLoadAssignment named NAMESPACE/SERVICE/PORT over Delta ADS.",
		Commands:        []*cli.Command{serveCommand(), bootstrap.Command(), bootstrap.CheckCommand(), versionCommand()},
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
