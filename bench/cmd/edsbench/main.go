package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deltaeds/deltaeds/bench"
	"github.com/deltaeds/deltaeds/bench/servers"
)

func main() {
	if len(os.Args) > 1 && strings.HasPrefix(strings.TrimLeft(os.Args[1], "-"), "serve") {
		os.Exit(servers.ChildMain(os.Args[1:]))
	}
	os.Exit(run())
}

func run() int {
	var (
		cfg              bench.Options
		workloads, servs string
		curve            string
		seed             uint64
		syncT, drainT    time.Duration
		quiet            bool
		fleetLimitMB     int64
	)
	flag.StringVar(&cfg.Profile, "profile", "short", "scale profile: tiny, short or full")
	flag.Float64Var(&cfg.Scale, "scale", 0, "run every workload at this scale of the issue's sizes (overrides -profile's scales)")
	flag.Float64Var(&cfg.RateFactor, "rate-factor", 0, "multiply every workload's change rate (overrides -profile's)")
	flag.StringVar(&workloads, "workloads", "", "comma-separated workloads (default all: "+strings.Join(bench.WorkloadNames(), ",")+")")
	flag.StringVar(&curve, "curve-streams", "", "comma-separated stream counts replacing fleet-curve's points, unscaled (e.g. 1000 for the full curve's first point)")
	flag.StringVar(&servs, "servers", "", "comma-separated servers (default all: deltaeds,linear,snapshot,wire)")
	flag.Uint64Var(&seed, "seed", 1, "seed of the workloads' random choices")
	flag.StringVar(&cfg.ResultsDir, "results", "bench/results", "directory for <timestamp>.json and .png; empty writes none")
	flag.StringVar(&cfg.DeltaedsBinary, "deltaeds", "", "deltaeds binary for the cluster workload (default: build one from this module)")
	flag.StringVar(&cfg.CPUProfileDir, "cpuprofile", "", "directory for a CPU profile of every child's change phase")
	flag.DurationVar(&syncT, "sync-timeout", 3*time.Minute, "bound on initial sync and reconnect")
	flag.DurationVar(&drainT, "drain-timeout", 3*time.Minute, "bound on waiting for the last change to reach every subscriber")
	flag.BoolVar(&cfg.Verbose, "v", false, "copy the children's logs to standard error")
	flag.BoolVar(&quiet, "q", false, "no progress lines")
	flag.Int64Var(&fleetLimitMB, "fleet-memory-limit-mb", 0, "soft memory limit of this process (the witness fleet), not of the servers, in MB; 0 leaves Go's default")
	flag.Parse()
	if fleetLimitMB < 0 {
		fmt.Fprintln(os.Stderr, "edsbench: -fleet-memory-limit-mb must not be negative")
		return 2
	}
	if fleetLimitMB > 0 {
		// The children are started without it: debug.SetMemoryLimit sets
		// this process's limit only, where GOMEMLIMIT would be inherited.
		debug.SetMemoryLimit(fleetLimitMB << 20)
	}

	cmd, err := bench.SelfCommand()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edsbench:", err)
		return 1
	}
	cfg.Command = cmd
	cfg.Seed = seed
	cfg.SyncTimeout, cfg.DrainTimeout = syncT, drainT
	if workloads != "" {
		cfg.Workloads = strings.Split(workloads, ",")
	}
	for _, f := range strings.FieldsFunc(curve, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "edsbench: -curve-streams: %q is not a positive stream count\n", f)
			return 2
		}
		cfg.CurveStreams = append(cfg.CurveStreams, n)
	}
	if servs != "" {
		cfg.Servers = strings.Split(servs, ",")
	}
	cfg.Out = os.Stdout
	if !quiet {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "edsbench:", err)
		return 1
	}
	return 0
}
