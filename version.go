package main

import (
	"fmt"
	"runtime/debug"

	promversion "github.com/prometheus/common/version"
	"github.com/urfave/cli/v2"
)

// The version and commit are prometheus/common/version's Version and
// Revision, set at build time by `make build`:
//
//	-ldflags "-X github.com/prometheus/common/version.Version=v1.2.3 -X github.com/prometheus/common/version.Revision=abc123"
//
// Without them the version is the module's (`go install ...@v1.2.3`), else
// "dev", and the revision the VCS stamp Go embeds (with "-modified" when the
// tree was), else "unknown". deltaeds_build_info reports the same.
//
// version and commit are the older form, -X main.version=... -X
// main.commit=... (the Dockerfile's): when set they win.
var (
	version string
	commit  string
)

func init() {
	if version != "" {
		promversion.Version = version
	}
	if commit != "" {
		promversion.Revision = commit
	}
	if promversion.Version != "" {
		return
	}
	promversion.Version = "dev"
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		promversion.Version = info.Main.Version
	}
}

func versionString() string {
	return fmt.Sprintf("deltaeds %s (commit %s, %s %s/%s)", promversion.Version, promversion.GetRevision(),
		promversion.GoVersion, promversion.GoOS, promversion.GoArch)
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
