// Package supervisor runs the child processes of the tests, the demo and the benchmark's
// control plane: etcd, kube-apiserver, kube-controller-manager and deltaeds. It is the one place
// that starts a child with its output in a log file, marks where each run starts in that file,
// waits for readiness, retries a run that found its port taken, stops or kills it and waits for
// it, and reads /proc (through github.com/prometheus/procfs) for children and memory.
//
// Using this package:
//  1. New with a Spec (name, binary, log file); SetArgs with the run's flags.
//  2. StartReady with a readiness check, and a pick function that chooses fresh ports for each
//     attempt (nil on a restart: the ports stay, since clients dial them).
//  3. Stop (SIGTERM, then SIGKILL after a grace period) or Kill (SIGKILL); both wait for the exit
//     and report a run that ended by itself, which nobody asked for, as an error with the end of
//     its log.
//
// It must never:
//   - be imported by the product binary: it is test infrastructure;
//   - leave a child running after Stop or Kill returns, or after the process that started it
//     dies (Linux: a parent-death signal);
//   - copy a child's output through a goroutine unless Spec.LogTo asks for it: the child writes
//     straight into its log file.
package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Polling and retry intervals.
const (
	// ReadyInterval is how often StartReady and WaitReady run the readiness check.
	ReadyInterval = 100 * time.Millisecond
	// checkTimeout bounds one readiness check.
	checkTimeout = 5 * time.Second
	// PortRetryInterval is how long StartReady waits before a run on the same ports again.
	PortRetryInterval = 500 * time.Millisecond
	// PortAttempts is how many runs StartReady tries on fresh ports.
	PortAttempts = 3
)

// ErrExitedEarly marks a run that exited before it was ready.
var ErrExitedEarly = errors.New("exited before it was ready")

// portInUseMarker is what Go (deltaeds, etcd, kube-apiserver) prints when bind fails with
// EADDRINUSE.
var portInUseMarker = []byte("address already in use")

// Spec says which child to run and where its output goes.
type Spec struct {
	// Name tells processes apart in logs and errors.
	Name string
	// Path is the binary.
	Path string
	// Args are the flags of the next run (see SetArgs).
	Args []string
	// LogPath is the log file, appended to across runs; each run starts with a "==== ...
	// starting" line and ends with a "==== ... exited" line.
	LogPath string
	// LogTo, when set, also receives everything the child prints.
	LogTo io.Writer
	// OwnProcessGroup starts the child in a process group of its own, so a Ctrl-C at the
	// terminal reaches only the caller, which then stops it in order.
	OwnProcessGroup bool
	// Logger receives lifecycle logs; nil means none.
	Logger *zap.Logger
}

// Process is one child, run any number of times in turn. Its methods are safe for concurrent
// use.
type Process struct {
	name    string
	path    string
	logPath string
	logTo   io.Writer
	group   bool
	log     *zap.Logger

	mu       sync.Mutex
	args     []string
	cmd      *exec.Cmd     // of the current run, nil before the first
	done     chan struct{} // closed when the current run has been waited for
	waitErr  error         // how the current run ended, valid once done is closed
	expected bool          // the current run's end was asked for (Stop, Kill)
	runFrom  int64         // offset in the log file where the current run's output starts
}

// New returns a Process for spec; it starts nothing.
func New(spec Spec) *Process {
	p := &Process{
		name: spec.Name, path: spec.Path, logPath: spec.LogPath, logTo: spec.LogTo,
		group: spec.OwnProcessGroup, log: spec.Logger, args: spec.Args,
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.log = p.log.With(zap.String("process", spec.Name))
	return p
}

// Name returns the Spec's name.
func (p *Process) Name() string { return p.name }

// LogPath returns the log file.
func (p *Process) LogPath() string { return p.logPath }

// SetArgs replaces the flags of the next run.
func (p *Process) SetArgs(args []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.args = args
}

// Start launches one run. It is not running on return if err != nil.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the log of %s: %w", p.name, err)
	}
	fmt.Fprintf(lf, "==== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	if st, err := lf.Stat(); err == nil {
		p.runFrom = st.Size()
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = os.Environ()
	cmd.SysProcAttr = sysProcAttr(p.group)
	var out io.Writer = lf // an *os.File: the child writes to it directly, no copying goroutine
	if p.logTo != nil {
		out = io.MultiWriter(lf, p.logTo)
		// Output is then copied by a goroutine that Wait joins; never let a stray holder of the
		// pipe keep Wait (and so Stop) from returning.
		cmd.WaitDelay = 5 * time.Second
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr, p.expected = cmd, done, nil, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(lf, "==== %s: %s exited: %v\n", time.Now().Format(time.RFC3339Nano), p.name, err)
		lf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.log.Info("started", zap.Int("pid", cmd.Process.Pid), zap.Strings("args", p.args))
	return nil
}

// Check tells whether a child is ready; its error says why not.
type Check func(ctx context.Context) error

// WaitReady runs check every ReadyInterval until it succeeds, the run exits (an error wrapping
// ErrExitedEarly) or ctx ends. Errors carry the end of the log and check's last error.
func (p *Process) WaitReady(ctx context.Context, check Check) error {
	var last error
	done := p.Done()
	err := wait.PollUntilContextCancel(ctx, ReadyInterval, true, func(ctx context.Context) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		last = check(cctx)
		cancel()
		if last == nil {
			return true, nil
		}
		if isClosed(done) {
			return false, fmt.Errorf("%s %w: %v%s", p.name, ErrExitedEarly, p.ExitErr(), p.TailForError())
		}
		return false, nil
	})
	if err == nil || errors.Is(err, ErrExitedEarly) {
		return err
	}
	return fmt.Errorf("%s not ready: %w (last check: %v)%s", p.name, err, last, p.TailForError())
}

// StartReady starts a run and waits until check says it is ready (see WaitReady); a run that is
// not ready is killed. When a run exits early because a port it was given is in use:
//   - with pick set (pick is called before every run to choose its ports, with SetArgs), it
//     tries fresh ports, PortAttempts runs in all;
//   - with pick nil (a restart: clients dial the ports it had) it tries the same ports again
//     every PortRetryInterval until ctx ends.
func (p *Process) StartReady(ctx context.Context, check Check, pick func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if pick != nil {
			if perr := pick(); perr != nil {
				return perr
			}
		}
		if err = p.Start(); err != nil {
			return err
		}
		if err = p.WaitReady(ctx, check); err == nil {
			return nil
		}
		_ = p.Kill() // err says what went wrong
		if !errors.Is(err, ErrExitedEarly) || !p.PortInUse() || ctx.Err() != nil {
			return err
		}
		if pick != nil {
			if attempt == PortAttempts {
				return err
			}
			p.log.Info("a port was in use, picking others", zap.Error(err))
			continue
		}
		p.log.Info("a port is still in use, retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(PortRetryInterval):
		}
	}
}

// PortInUse reports whether the current run's log says it could not bind a port.
func (p *Process) PortInUse() bool {
	p.mu.Lock()
	from := p.runFrom
	p.mu.Unlock()
	data, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(data)) < from {
		return false
	}
	return bytes.Contains(data[from:], portInUseMarker)
}

// Pid returns the process id of the current run (0 before the first).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// closedChan stands for the end of a run that never started.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done is closed when the current run has exited (already closed before the first run).
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return closedChan
	}
	return p.done
}

// Exited reports whether the current run has ended (true before the first).
func (p *Process) Exited() bool { return isClosed(p.Done()) }

// ExitErr returns how the current run ended (nil while running or after a clean exit).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// claim marks the current run's end as expected from now on and reports whether it had
// already ended without being asked to, and the channel to wait on.
func (p *Process) claim() (cmd *exec.Cmd, done <-chan struct{}, unasked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, closedChan, false
	}
	unasked = isClosed(p.done) && !p.expected
	p.expected = true
	return p.cmd, p.done, unasked
}

// Stop sends SIGTERM and waits for the exit, killing the child after grace. It returns an error
// if the run had ended by itself, did not stop within grace, or exited with a non-zero status.
// Stopping a stopped (or never started) process is a no-op.
func (p *Process) Stop(grace time.Duration) error {
	cmd, done, unasked := p.claim()
	if unasked {
		return fmt.Errorf("%s had exited by itself: %v%s", p.name, p.ExitErr(), p.TailForError())
	}
	if isClosed(done) {
		return nil
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling %s: %w", p.name, err)
	}
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed%s", p.name, grace, p.TailForError())
	}
	p.log.Info("stopped", zap.Duration("took", time.Since(start)), zap.Error(p.ExitErr()))
	if err := p.ExitErr(); err != nil {
		return fmt.Errorf("%s exited with %v after SIGTERM%s", p.name, err, p.TailForError())
	}
	return nil
}

// Kill sends SIGKILL, like a crash or an OOM kill, and waits for the exit. It returns an error
// if the run had ended by itself before. Killing a stopped (or never started) process is a
// no-op.
func (p *Process) Kill() error {
	cmd, done, unasked := p.claim()
	if unasked {
		return fmt.Errorf("%s had exited by itself: %v%s", p.name, p.ExitErr(), p.TailForError())
	}
	if isClosed(done) {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-done
	p.log.Info("killed")
	return nil
}

// Tail returns the last n lines of the log file.
func (p *Process) Tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	return LastLines(data, n)
}

// TailForError formats the end of the log for an error message.
func (p *Process) TailForError() string {
	return fmt.Sprintf("\n--- last lines of %s ---\n%s--- end of the %s log ---", p.logPath, p.Tail(40), p.name)
}

// LastLines returns the last n lines of data, ending with a newline.
func LastLines(data []byte, n int) string {
	data = bytes.TrimRight(data, "\n")
	i := len(data)
	for ; n > 0 && i > 0; n-- {
		i = bytes.LastIndexByte(data[:i], '\n')
		if i < 0 {
			i = 0
			break
		}
	}
	if i > 0 {
		i++ // drop the newline itself
	}
	return string(data[i:]) + "\n"
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// FreePorts returns n distinct ports on 127.0.0.1 that were free a moment ago. Another process
// may still take one before the child binds it: StartReady retries on "address already in use".
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreeAddress returns 127.0.0.1:PORT for a port that was free a moment ago.
func FreeAddress() (string, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0]), nil
}
