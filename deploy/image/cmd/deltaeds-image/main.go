// Command deltaeds-image builds deltaeds' OCI image (package image) from the repository at -root
// and writes it as an OCI layout and a tarball. `make image` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/deltaeds/deltaeds/deploy/image"
)

func main() {
	var o image.Options
	flag.StringVar(&o.Root, "root", "../..", "repository root (the main module)")
	flag.StringVar(&o.Version, "version", "dev", "deltaeds version: -X main.version and the org.opencontainers.image.version label")
	flag.StringVar(&o.Commit, "commit", "unknown", "commit: -X main.commit and the org.opencontainers.image.revision label")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the binary and the image")
	flag.StringVar(&o.Layout, "layout", "", "write an OCI image layout to this folder (replaced)")
	flag.StringVar(&o.Tarball, "tarball", "", "write a `docker load`-able tarball to this file")
	flag.Parse()
	if flag.NArg() > 0 || (o.Layout == "" && o.Tarball == "") {
		fmt.Fprintln(os.Stderr, "usage: deltaeds-image [-root DIR] [-version V] [-commit C] [-arch A] -layout DIR and/or -tarball FILE")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := image.Build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deltaeds-image:", err)
		os.Exit(1)
	}
	fmt.Printf("deltaeds-image: %s %s (%s)\n", res.Ref, res.Digest, res.Where())
}
