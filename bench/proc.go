package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deltaeds/deltaeds/bench/control"
)

// ChildCommand returns the command that runs a server child with the given
// arguments (-serve=<kind>, -addr=..., -cpuprofile=...). It must not set
// Stdin, Stdout or Stderr.
type ChildCommand func(args []string) *exec.Cmd

// SelfCommand re-executes the running binary, which must handle -serve (see
// servers.ChildMain).
func SelfCommand() (ChildCommand, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return func(args []string) *exec.Cmd { return exec.Command(exe, args...) }, nil
}

// child is the parent's handle on one server process.
type child struct {
	kind   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	w      *bufio.Writer
	lines  chan string // answers, closed when the child's stdout ends
	stderr *tailBuffer
	exited chan struct{}
	err    error // of Wait, valid once exited is closed
	addr   string
}

// startChild starts a server child listening on addr, with SO_REUSEPORT
// when reusePort is set (a successor can then listen on the same address
// before this child goes), serving zone variants when zones > 0.
func startChild(cmdFn ChildCommand, kind string, zones int, addr, profileBase string, reusePort bool, log io.Writer) (*child, error) {
	args := []string{"-serve=" + kind, "-addr=" + addr}
	if reusePort {
		args = append(args, "-reuseport")
	}
	if zones > 0 {
		args = append(args, "-zones="+strconv.Itoa(zones))
	}
	if profileBase != "" {
		args = append(args, "-cpuprofile="+profileBase+".cpu.pprof", "-memprofile="+profileBase+".heap.pprof", "-peakprofile="+profileBase+".peak.heap.pprof")
	}
	cmd := cmdFn(args)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("child %s: stdin: %w", kind, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("child %s: stdout pipe: %w", kind, err)
	}
	c := &child{
		kind:   kind,
		cmd:    cmd,
		stdin:  stdin,
		w:      bufio.NewWriterSize(stdin, 64<<10),
		lines:  make(chan string, 4),
		stderr: &tailBuffer{max: 32 << 10, tee: log},
		exited: make(chan struct{}),
	}
	cmd.Stdout = pw
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		return nil, fmt.Errorf("child %s: start: %w", kind, err)
	}
	_ = pw.Close() // the child holds its own copy
	go func() {
		defer close(c.lines)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// failure wraps err with the tail of the child's standard error.
func (c *child) failure(err error) error {
	tail := strings.TrimSpace(c.stderr.String())
	if tail == "" {
		return fmt.Errorf("child %s: %w", c.kind, err)
	}
	return fmt.Errorf("child %s: %w; its stderr ends with:\n%s", c.kind, err, tail)
}

// send writes command lines without waiting for an answer.
func (c *child) send(lines ...[]byte) error {
	for _, l := range lines {
		if _, err := c.w.Write(l); err != nil {
			return c.failure(fmt.Errorf("write command: %w", err))
		}
	}
	if err := c.w.Flush(); err != nil {
		return c.failure(fmt.Errorf("write command: %w", err))
	}
	return nil
}

// request sends one command and returns the arguments of its answer, which
// must start with want.
func (c *child) request(ctx context.Context, cmd, want string, timeout time.Duration) (string, error) {
	if err := c.send([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.exited
			return "", c.failure(fmt.Errorf("exited (%v) before answering %s", c.err, cmd))
		}
		verb, args, _ := strings.Cut(line, " ")
		if verb != want {
			return "", c.failure(fmt.Errorf("answered %s with %q, want %s", cmd, line, want))
		}
		return args, nil
	case <-t.C:
		return "", c.failure(fmt.Errorf("no answer to %s within %v", cmd, timeout))
	case <-ctx.Done():
		return "", c.failure(fmt.Errorf("waiting for an answer to %s: %w", cmd, ctx.Err()))
	}
}

// serve loads the initial state and waits for the listener.
func (c *child) serve(ctx context.Context, initial [][]byte, timeout time.Duration) error {
	if err := c.send(initial...); err != nil {
		return err
	}
	addr, err := c.request(ctx, control.CmdServe, control.ReplyReady, timeout)
	if err != nil {
		return err
	}
	c.addr = addr
	return nil
}

// stats asks the child for its resource usage. Its answer also means every
// set sent before has been applied.
func (c *child) stats(ctx context.Context, timeout time.Duration) (control.Stats, error) {
	args, err := c.request(ctx, control.CmdStats, control.ReplyStats, timeout)
	if err != nil {
		return control.Stats{}, err
	}
	var st control.Stats
	if err := json.Unmarshal([]byte(args), &st); err != nil {
		return control.Stats{}, c.failure(fmt.Errorf("decode stats %q: %w", args, err))
	}
	return st, nil
}

// quit asks the child to stop and waits for it, killing it after timeout.
func (c *child) quit(timeout time.Duration) error {
	_ = c.send([]byte(control.CmdQuit + "\n"))
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return c.failure(fmt.Errorf("did not exit within %v of quit; killed", timeout))
	}
	for range c.lines { // drain, so the reader goroutine has ended
	}
	if c.err != nil {
		return c.failure(fmt.Errorf("exit: %w", c.err))
	}
	return nil
}

// kill ends the child if it is still running; safe after quit.
func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	_ = c.stdin.Close()
	for range c.lines {
	}
}

// tailBuffer keeps the last max bytes written, and copies everything to tee
// when set.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
	tee io.Writer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tee != nil {
		_, _ = t.tee.Write(p)
	}
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
