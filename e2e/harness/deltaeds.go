package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Environment variables read by BuildDeltaeds.
const (
	// EnvBinary names a prebuilt deltaeds binary to use instead of building one.
	EnvBinary = "DELTAEDS_E2E_BIN"
	// EnvRace, when "1", builds deltaeds with the race detector.
	EnvRace = "DELTAEDS_E2E_RACE"
)

// modulePath is the main module, whose root is where deltaeds is built from.
const modulePath = "github.com/deltaeds/deltaeds"

// DefaultReadyTimeout bounds how long StartDeltaeds waits for /readyz. Generous: on 2 busy cores a
// starting replica lists every EndpointSlice before it is ready.
const DefaultReadyTimeout = 2 * time.Minute

// stopTimeout is how long Stop waits after SIGTERM before it kills.
const stopTimeout = 20 * time.Second

// ModuleRoot walks up from the working directory to the folder whose go.mod declares the
// deltaeds module.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: locating the module root: %w", err)
	}
	for d := wd; ; {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && declaresModule(data) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("harness: no go.mod for %s in %s or any parent", modulePath, wd)
		}
		d = parent
	}
}

func declaresModule(gomod []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}

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
	root, err := ModuleRoot()
	if err != nil {
		return "", err
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
	opts    DeltaedsOptions
	log     *zap.Logger
	logPath string
	args    []string
	http    *http.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	stopped bool  // set before a signal this package sends, so the exit is expected
	runFrom int64 // offset in the log file where the current run's output starts
}

// StartDeltaeds runs `deltaeds serve` with opts and waits until /readyz answers 200. On error nothing is
// left running and the error carries the end of the process's log.
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
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	p := &Deltaeds{
		opts:    opts,
		log:     opts.Logger.With(zap.String("process", opts.Name)),
		logPath: filepath.Join(opts.LogDir, opts.Name+".log"),
		http:    &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
	}
	// Ports picked here may be taken by someone else before deltaeds binds them: then pick
	// others. (A restart keeps its ports, since clients dial them; see StartAgain.)
	pick := opts.XDSAddress == "" || opts.AdminAddress == ""
	for attempt := 1; ; attempt++ {
		var err error
		if opts.XDSAddress == "" {
			if p.opts.XDSAddress, err = FreeAddress(); err != nil {
				return nil, err
			}
		}
		if opts.AdminAddress == "" {
			if p.opts.AdminAddress, err = FreeAddress(); err != nil {
				return nil, err
			}
		}
		p.args = p.serveArgs()
		err = p.startOnce(ctx)
		if err == nil {
			return p, nil
		}
		if !pick || attempt == 3 || !errors.Is(err, errExitedEarly) || !p.portTaken() {
			return nil, err
		}
		p.log.Info("a port was taken, picking others", zap.Error(err))
	}
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

// start launches the process and waits for readiness. When the run exits early because a port
// it was given is taken (by a process that grabbed it since it was picked, or by the previous
// run's socket), it tries again until the readiness deadline.
func (p *Deltaeds) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.ReadyTimeout)
	defer cancel()
	for {
		err := p.startOnce(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errExitedEarly) || !p.portTaken() || ctx.Err() != nil {
			return err
		}
		p.log.Info("port taken, retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// errExitedEarly marks a run that exited before it was ready.
var errExitedEarly = errors.New("exited before it was ready")

// startOnce launches the process once and waits for readiness (bounded by ReadyTimeout).
func (p *Deltaeds) startOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.ReadyTimeout)
	defer cancel()
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("harness: %s: opening the log: %w", p.opts.Name, err)
	}
	fmt.Fprintf(lf, "==== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.opts.Binary, strings.Join(p.args, " "))
	if st, err := lf.Stat(); err == nil {
		p.runFrom = st.Size()
	}
	cmd := exec.Command(p.opts.Binary, p.args...)
	cmd.Env = os.Environ()
	cmd.SysProcAttr = sysProcAttr(p.opts.OwnProcessGroup)
	var out io.Writer = lf
	if p.opts.LogTo != nil {
		out = io.MultiWriter(lf, p.opts.LogTo)
		cmd.WaitDelay = 5 * time.Second
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("harness: starting %s: %w", p.opts.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.waitErr, p.stopped = cmd, done, nil, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(lf, "==== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		lf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.log.Info("started", zap.Int("pid", cmd.Process.Pid), zap.String("xds", p.opts.XDSAddress),
		zap.String("admin", p.opts.AdminAddress))

	if err := p.waitReady(ctx); err != nil {
		_ = p.Kill()
		return err
	}
	return nil
}

// portTaken reports whether the latest run's log says it could not bind a port.
func (p *Deltaeds) portTaken() bool {
	data, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(data)) < p.runFrom {
		return false
	}
	return bytes.Contains(data[p.runFrom:], []byte("address already in use"))
}

// waitReady polls /readyz until it answers 200, the process exits, or the deadline passes.
func (p *Deltaeds) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		code, body, err := p.Get(ctx, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("/readyz answered %d: %s", code, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-p.Done():
			return fmt.Errorf("harness: %s %w: %v%s", p.opts.Name, errExitedEarly, p.ExitErr(), p.tailForError())
		case <-ctx.Done():
			return fmt.Errorf("harness: %s not ready: %w (last check: %v)%s", p.opts.Name, ctx.Err(), last, p.tailForError())
		case <-tick.C:
		}
	}
}

// Name returns the process's name.
func (p *Deltaeds) Name() string { return p.opts.Name }

// XDSAddress returns the gRPC address, host:port.
func (p *Deltaeds) XDSAddress() string { return p.opts.XDSAddress }

// AdminURL returns the admin server's base URL.
func (p *Deltaeds) AdminURL() string { return "http://" + p.opts.AdminAddress }

// LogPath returns the process's log file (appended to across restarts).
func (p *Deltaeds) LogPath() string { return p.logPath }

// Pid returns the process id of the current run.
func (p *Deltaeds) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Done is closed when the current run has exited.
func (p *Deltaeds) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Alive reports whether the current run is still running.
func (p *Deltaeds) Alive() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// ExitErr returns how the current run ended (nil while running or after a clean exit).
func (p *Deltaeds) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Stop sends SIGTERM and waits for a clean exit. It kills the process after stopTimeout. It
// returns an error if the process had died by itself, did not stop in time, or exited with a
// non-zero status: deltaeds must shut down cleanly on SIGTERM. Stopping a stopped process is a
// no-op.
func (p *Deltaeds) Stop() error {
	p.mu.Lock()
	cmd, done, already := p.cmd, p.done, p.stopped
	p.stopped = true
	p.mu.Unlock()
	select {
	case <-done:
		if already {
			return nil
		}
		return fmt.Errorf("harness: %s had exited by itself: %v%s", p.opts.Name, p.ExitErr(), p.tailForError())
	default:
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: signalling %s: %w", p.opts.Name, err)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("harness: %s did not exit within %s of SIGTERM; killed%s", p.opts.Name, stopTimeout, p.tailForError())
	}
	p.log.Info("stopped", zap.Duration("took", time.Since(start)), zap.Error(p.ExitErr()))
	if err := p.ExitErr(); err != nil {
		return fmt.Errorf("harness: %s exited with %v after SIGTERM%s", p.opts.Name, err, p.tailForError())
	}
	return nil
}

// Kill sends SIGKILL, like a crash or an OOM kill, and waits for the exit.
func (p *Deltaeds) Kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopped = true
	p.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: killing %s: %w", p.opts.Name, err)
	}
	<-done
	p.log.Info("killed")
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
	return p.start(ctx)
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
func (p *Deltaeds) Metrics(ctx context.Context) (Metrics, error) {
	code, body, err := p.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("harness: %s /metrics answered %d", p.opts.Name, code)
	}
	return ParseMetrics(body)
}

// RSS returns the resident memory of the current run, in bytes, from /proc.
func (p *Deltaeds) RSS() (int64, error) {
	return rssOf(p.Pid())
}

// LogTail returns the last n lines of the process's log.
func (p *Deltaeds) LogTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	return lastLines(data, n)
}

func (p *Deltaeds) tailForError() string {
	return fmt.Sprintf("\n--- last lines of %s ---\n%s--- end ---", p.logPath, p.LogTail(40))
}

func lastLines(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// FreeAddress returns 127.0.0.1:PORT for a port that was free a moment ago.
func FreeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("harness: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
