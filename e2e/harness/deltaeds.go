package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/scrape"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// Environment variables read by BuildDeltaeds.
const (
	// EnvBinary names a prebuilt deltaeds binary to use instead of building one.
	EnvBinary = "DELTAEDS_E2E_BIN"
	// EnvRace, when "1", builds deltaeds with the race detector.
	EnvRace = "DELTAEDS_E2E_RACE"
)

// DefaultReadyTimeout bounds how long StartDeltaeds waits for /readyz. Generous: on 2 busy cores a
// starting replica lists every EndpointSlice before it is ready.
const DefaultReadyTimeout = 2 * time.Minute

// stopTimeout is how long Stop waits after SIGTERM before it kills.
const stopTimeout = 20 * time.Second

// BuildDeltaeds builds deltaeds from the module's current source into dir and returns the
// binary's path. go build's cache makes a rebuild of unchanged source take about a second, and a
// changed source is always rebuilt, so the tests never run a stale binary. $DELTAEDS_E2E_BIN
// overrides the build; $DELTAEDS_E2E_RACE=1 builds with -race.
func BuildDeltaeds(ctx context.Context, dir string) (string, error) {
	return build(ctx, dir, "deltaeds", os.Getenv(EnvRace) == "1")
}

// BuildDeltaedsRace builds deltaeds with the race detector into dir, whatever the environment
// says ($DELTAEDS_E2E_BIN is not used): a race-built process that saw a data race exits with
// status 66, which Stop reports.
func BuildDeltaedsRace(ctx context.Context, dir string) (string, error) {
	return build(ctx, dir, "deltaeds-race", true)
}

func build(ctx context.Context, dir, name string, race bool) (string, error) {
	if bin := os.Getenv(EnvBinary); bin != "" && name == "deltaeds" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", fmt.Errorf("harness: %s: %w", EnvBinary, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("harness: %s=%s: %w", EnvBinary, bin, err)
		}
		return abs, nil
	}
	root, err := controlplane.ModuleRoot(".")
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, ".")
	gobin := os.Getenv("GO")
	if gobin == "" {
		gobin = "go"
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = root
	var outBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("harness: %s %s in %s: %w\n%s", gobin, strings.Join(args, " "), root, err, outBuf.String())
	}
	return out, nil
}

// DeltaedsOptions says how to run one deltaeds process. Binary and Kubeconfig are required.
type DeltaedsOptions struct {
	// Name tells processes apart in logs and errors ("deltaeds" when empty).
	Name       string
	Binary     string
	Kubeconfig string
	// XDSAddress and AdminAddress are host:port; empty picks a free port on 127.0.0.1.
	XDSAddress   string
	AdminAddress string
	// DeletedGracePeriod is --deleted-grace-period; 0 keeps deltaeds' default.
	DeletedGracePeriod time.Duration
	// TLS files, passed as --tls-cert-file, --tls-key-file and --tls-client-ca-file when set.
	TLSCertFile, TLSKeyFile, TLSClientCAFile string
	// MaxSubscriptionsPerStream is --max-subscriptions-per-stream; 0 keeps the default.
	MaxSubscriptionsPerStream int
	// LogLevel is --log-level (default "info").
	LogLevel string
	// ExtraArgs are appended to the serve command's flags.
	ExtraArgs []string
	// LogDir is where the process's log file goes (required).
	LogDir string
	// LogTo, when set, also receives everything the process prints.
	LogTo io.Writer
	// ReadyTimeout bounds the wait for /readyz (default DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// OwnProcessGroup starts the process in a process group of its own, so a Ctrl-C at the
	// terminal reaches only the caller, which then stops the process in order.
	OwnProcessGroup bool
	// Logger receives lifecycle logs; nil means none.
	Logger *zap.Logger
}

// Deltaeds is a running deltaeds process. Its methods are safe for concurrent use.
type Deltaeds struct {
	opts DeltaedsOptions // the addresses are fixed once the first run is ready
	proc *supervisor.Process
	http *http.Client
}

// StartDeltaeds runs `deltaeds serve` with opts and waits until /readyz answers 200. On error
// nothing is left running and the error carries the end of the process's log.
func StartDeltaeds(ctx context.Context, opts DeltaedsOptions) (*Deltaeds, error) {
	if opts.Binary == "" || opts.Kubeconfig == "" || opts.LogDir == "" {
		return nil, errors.New("harness: DeltaedsOptions.Binary, Kubeconfig and LogDir are required")
	}
	if opts.Name == "" {
		opts.Name = "deltaeds"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	p := &Deltaeds{
		opts: opts,
		proc: supervisor.New(supervisor.Spec{
			Name:            opts.Name,
			Path:            opts.Binary,
			LogPath:         filepath.Join(opts.LogDir, opts.Name+".log"),
			LogTo:           opts.LogTo,
			OwnProcessGroup: opts.OwnProcessGroup,
			Logger:          opts.Logger,
		}),
		http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
	}
	// Ports picked here may be taken by someone else before deltaeds binds them: then each
	// attempt picks others. (A restart keeps its ports, since clients dial them; see StartAgain.)
	pick := func() error {
		var err error
		if opts.XDSAddress == "" {
			if p.opts.XDSAddress, err = supervisor.FreeAddress(); err != nil {
				return fmt.Errorf("harness: %w", err)
			}
		}
		if opts.AdminAddress == "" {
			if p.opts.AdminAddress, err = supervisor.FreeAddress(); err != nil {
				return fmt.Errorf("harness: %w", err)
			}
		}
		p.proc.SetArgs(p.serveArgs())
		return nil
	}
	if err := p.start(ctx, pick); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Deltaeds) serveArgs() []string {
	o := p.opts
	args := []string{"serve",
		"--kubeconfig", o.Kubeconfig,
		"--xds-address", o.XDSAddress,
		"--admin-address", o.AdminAddress,
		"--log-level", o.LogLevel,
	}
	if o.DeletedGracePeriod > 0 {
		args = append(args, "--deleted-grace-period", o.DeletedGracePeriod.String())
	}
	if o.TLSCertFile != "" {
		args = append(args, "--tls-cert-file", o.TLSCertFile)
	}
	if o.TLSKeyFile != "" {
		args = append(args, "--tls-key-file", o.TLSKeyFile)
	}
	if o.TLSClientCAFile != "" {
		args = append(args, "--tls-client-ca-file", o.TLSClientCAFile)
	}
	if o.MaxSubscriptionsPerStream > 0 {
		args = append(args, "--max-subscriptions-per-stream", strconv.Itoa(o.MaxSubscriptionsPerStream))
	}
	return append(args, o.ExtraArgs...)
}

// start runs the process and waits until /readyz answers 200 (bounded by ReadyTimeout); pick is
// as in supervisor.Process.StartReady.
func (p *Deltaeds) start(ctx context.Context, pick func() error) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.ReadyTimeout)
	defer cancel()
	err := p.proc.StartReady(ctx, func(ctx context.Context) error {
		code, body, err := p.Get(ctx, "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz answered %d: %s", code, strings.TrimSpace(string(body)))
		}
		return err
	}, pick)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Name returns the process's name.
func (p *Deltaeds) Name() string { return p.opts.Name }

// XDSAddress returns the gRPC address, host:port.
func (p *Deltaeds) XDSAddress() string { return p.opts.XDSAddress }

// AdminURL returns the admin server's base URL.
func (p *Deltaeds) AdminURL() string { return "http://" + p.opts.AdminAddress }

// LogPath returns the process's log file (appended to across restarts).
func (p *Deltaeds) LogPath() string { return p.proc.LogPath() }

// Pid returns the process id of the current run.
func (p *Deltaeds) Pid() int { return p.proc.Pid() }

// Done is closed when the current run has exited.
func (p *Deltaeds) Done() <-chan struct{} { return p.proc.Done() }

// Alive reports whether the current run is still running.
func (p *Deltaeds) Alive() bool { return !p.proc.Exited() }

// ExitErr returns how the current run ended (nil while running or after a clean exit).
func (p *Deltaeds) ExitErr() error { return p.proc.ExitErr() }

// Stop sends SIGTERM and waits for a clean exit. It kills the process after stopTimeout. It
// returns an error if the process had died by itself, did not stop in time, or exited with a
// non-zero status: deltaeds must shut down cleanly on SIGTERM. Stopping a stopped process is a
// no-op.
func (p *Deltaeds) Stop() error {
	if err := p.proc.Stop(stopTimeout); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Kill sends SIGKILL, like a crash or an OOM kill, and waits for the exit. It returns an error if
// the process had died by itself before.
func (p *Deltaeds) Kill() error {
	if err := p.proc.Kill(); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Restart stops the process (SIGTERM) and runs it again with the same flags and ports, waiting
// for readiness. Clients dialled to its address reconnect to the new process.
func (p *Deltaeds) Restart(ctx context.Context) error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.StartAgain(ctx)
}

// StartAgain runs the process again after Stop or Kill, on the same ports, and waits for
// readiness, retrying while a port is still taken.
func (p *Deltaeds) StartAgain(ctx context.Context) error {
	if p.Alive() {
		return fmt.Errorf("harness: %s is running", p.opts.Name)
	}
	return p.start(ctx, nil)
}

// Get fetches path from the admin server.
func (p *Deltaeds) Get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("harness: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("harness: reading %s: %w", path, err)
	}
	return resp.StatusCode, body, nil
}

// Metrics scrapes /metrics.
func (p *Deltaeds) Metrics(ctx context.Context) (scrape.Metrics, error) {
	code, body, err := p.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("harness: %s /metrics answered %d", p.opts.Name, code)
	}
	return scrape.Parse(bytes.NewReader(body))
}

// RSS returns the resident memory of the current run, in bytes, from /proc.
func (p *Deltaeds) RSS() (int64, error) {
	rss, _, err := supervisor.Memory(p.Pid())
	if err != nil {
		return 0, fmt.Errorf("harness: %w", err)
	}
	return int64(rss), nil
}

// LogTail returns the last n lines of the process's log.
func (p *Deltaeds) LogTail(n int) string { return p.proc.Tail(n) }
