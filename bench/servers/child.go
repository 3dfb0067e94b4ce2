package servers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"golang.org/x/sys/unix"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/bench/peakheap"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// ChildOptions configure RunChild.
type ChildOptions struct {
	// Kind is the server to run, one of control.Kinds.
	Kind string
	// Addr is the listen address; port 0 picks a free port, reported in the
	// answer to serve.
	Addr string
	// CPUProfile, if set, is where a CPU profile is written: it covers the
	// time from the profile command until quit (or the end of input).
	CPUProfile string
	// MemProfile, if set, is where a heap profile is written at quit (after
	// a GC: what is live at the end of the run).
	MemProfile string
	// PeakProfile, if set, is where a heap profile taken at the largest live
	// heap of the run is written at quit (see package peakheap).
	PeakProfile string
	// ReusePort listens with SO_REUSEPORT, so that a successor can listen
	// on the same address while this child still runs (the storm workload).
	ReusePort bool
	// Zones, when positive, serves each zone its variant of every CLA (see
	// bench.Workload.Zones); deltaeds only.
	Zones int
}

// RunChild runs one server under the control protocol read from in, with
// answers written to out, until quit, the end of in, or ctx is done.
func RunChild(ctx context.Context, opts ChildOptions, in io.Reader, out io.Writer) (err error) {
	srv, err := NewZoned(ctx, opts.Kind, opts.Zones)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	reply := func(format string, args ...any) error {
		fmt.Fprintf(w, format+"\n", args...)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("child: write answer: %w", err)
		}
		return nil
	}

	peak, stopPeak := peakheap.Start(ctx, opts.PeakProfile != "")
	defer func() {
		stopPeak()
		if opts.PeakProfile != "" {
			if perr := peak.WriteProfile(opts.PeakProfile); perr != nil && err == nil {
				err = perr
			}
		}
	}()

	var (
		initial  []*endpointv3.ClusterLoadAssignment
		sliced   sliceAssembler // for servers that take whole CLAs
		serving  bool
		applied  uint64
		profFile *os.File
	)
	defer func() {
		if opts.MemProfile != "" {
			if merr := writeHeapProfile(opts.MemProfile); merr != nil && err == nil {
				err = merr
			}
		}
		if profFile != nil {
			pprof.StopCPUProfile()
			if cerr := profFile.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("child: close cpu profile: %w", cerr)
			}
		}
		if serving {
			sctx, cancel := context.WithTimeout(context.Background(), control.StopTimeout)
			defer cancel()
			if serr := srv.Stop(sctx); serr != nil && err == nil {
				err = serr
			}
		}
	}()

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if ctx.Err() != nil {
			return nil
		}
		line := sc.Text()
		cmd, args, _ := strings.Cut(line, " ")
		switch cmd {
		case control.CmdSet:
			s, err := control.ParseSet(args)
			if err != nil {
				return fmt.Errorf("child: %w", err)
			}
			cla := control.BuildCLA(s)
			if !serving {
				initial = append(initial, cla)
				continue
			}
			if err := srv.Set(cla); err != nil {
				return err
			}
			applied++
		case control.CmdSlice:
			s, err := control.ParseSlice(args)
			if err != nil {
				return fmt.Errorf("child: %w", err)
			}
			if ss, ok := srv.(SliceServer); ok {
				if err := ss.SetSlice(s); err != nil {
					return err
				}
			} else if cla := sliced.set(s); serving {
				if err := srv.Set(control.BuildCLA(cla)); err != nil {
					return err
				}
			}
			if serving {
				applied++
			}
		case control.CmdServe:
			if serving {
				return errors.New("child: serve sent twice")
			}
			for _, s := range sliced.all() {
				initial = append(initial, control.BuildCLA(s))
			}
			if err := srv.Load(initial); err != nil {
				return err
			}
			initial = nil
			var lc net.ListenConfig
			if opts.ReusePort {
				lc.Control = reusePort
			}
			lis, err := lc.Listen(ctx, "tcp", opts.Addr)
			if err != nil {
				return fmt.Errorf("child: listen on %s: %w", opts.Addr, err)
			}
			if err := srv.Serve(lis); err != nil {
				return err
			}
			serving = true
			if err := reply("%s %s", control.ReplyReady, lis.Addr()); err != nil {
				return err
			}
		case control.CmdStats:
			st := selfStats()
			st.Applied = applied
			st.PeakLiveHeapBytes = peak.Max()
			if vb, ok := srv.(interface{ VariantBuilds() uint64 }); ok {
				st.VariantBuilds = vb.VariantBuilds()
			}
			b, err := json.Marshal(st)
			if err != nil {
				return fmt.Errorf("child: encode stats: %w", err)
			}
			if err := reply("%s %s", control.ReplyStats, b); err != nil {
				return err
			}
		case control.CmdProfile:
			if opts.CPUProfile != "" && profFile == nil {
				f, err := os.Create(opts.CPUProfile)
				if err != nil {
					return fmt.Errorf("child: create cpu profile: %w", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					_ = f.Close()
					return fmt.Errorf("child: start cpu profile: %w", err)
				}
				profFile = f
			}
			if err := reply("%s", control.ReplyOK); err != nil {
				return err
			}
		case control.CmdQuit:
			return nil
		default:
			return fmt.Errorf("child: unknown command %q", cmd)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("child: read commands: %w", err)
	}
	return nil
}

// selfStats reads this process's rusage and memory.
func selfStats() control.Stats {
	var st control.Stats
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		st.UserSeconds = float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6
		st.SystemSeconds = float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
		st.PeakRSSBytes = uint64(ru.Maxrss) * 1024 // Linux reports KiB
	}
	if rss, peak, err := supervisor.Memory(os.Getpid()); err == nil {
		st.RSSBytes, st.PeakRSSBytes = rss, peak
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapBytes = ms.HeapAlloc
	st.Goroutines = runtime.NumGoroutine()
	return st
}

// ChildMain runs a child from command-line arguments (-serve=<kind>,
// -addr=host:port, -cpuprofile=file) on standard input and output until quit
// or SIGTERM, and returns the process exit code.
func ChildMain(args []string) int {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	var opts ChildOptions
	fs.StringVar(&opts.Kind, "serve", "", "server kind: "+strings.Join(control.Kinds, ", "))
	fs.StringVar(&opts.Addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile from the profile command to exit")
	fs.StringVar(&opts.MemProfile, "memprofile", "", "write a heap profile at exit")
	fs.StringVar(&opts.PeakProfile, "peakprofile", "", "write a heap profile taken at the largest live heap, at exit")
	fs.BoolVar(&opts.ReusePort, "reuseport", false, "listen with SO_REUSEPORT")
	fs.IntVar(&opts.Zones, "zones", 0, "serve each of this many zones its variant of every CLA (deltaeds only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := RunChild(ctx, opts, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "edsbench child %s: %v\n", opts.Kind, err)
		return 1
	}
	return 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("child: create heap profile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("child: write heap profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("child: close heap profile: %w", err)
	}
	return nil
}

// reusePort sets SO_REUSEPORT on a listening socket before it binds.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return fmt.Errorf("child: listen on %s: %w", address, err)
	}
	if serr != nil {
		return fmt.Errorf("child: SO_REUSEPORT on %s: %w", address, serr)
	}
	return nil
}
