package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/urfave/cli/v2"
)

// runCommand runs `deltaeds NAME args...` for one of the package's commands in an App set up
// like main's (errors returned, never printed or exited on), and returns its stdout, stderr,
// error and exit code.
//
//lint:ignore ST1008 returns what a CLI run ends with: its output, its error, then its exit code
func runCommand(t *testing.T, ctx context.Context, cmd *cli.Command, args ...string) (stdout, stderr string, err error, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:           "deltaeds",
		Writer:         &out,
		ErrWriter:      &errOut,
		Commands:       []*cli.Command{cmd},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err = app.RunContext(ctx, append([]string{"deltaeds", cmd.Name}, args...))
	if err != nil {
		code = 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
	}
	return out.String(), errOut.String(), err, code
}
