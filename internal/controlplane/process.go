package controlplane

import (
	"bytes"
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
)

// process is one child (etcd, kube-apiserver, kube-controller-manager). Its output goes to a log
// file in the control plane's folder (appended to across restarts) and, when set, to logTo.
type process struct {
	name    string
	path    string
	args    []string
	logPath string
	logTo   io.Writer // nil, or a line-prefixing writer shared by all processes

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when the process has been waited for
	waitErr error         // valid once done is closed
	killed  bool          // set by stop before it signals: an exit after that is expected
	runFrom int64         // offset in the log file where the current run's output starts
}

// start launches the process. It is not running on return if err != nil.
func (p *process) start() error {
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s log: %w", p.name, err)
	}
	fmt.Fprintf(lf, "==== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	if st, err := lf.Stat(); err == nil {
		p.runFrom = st.Size()
	}

	cmd := exec.Command(p.path, p.args...)
	cmd.Env = os.Environ()
	cmd.SysProcAttr = sysProcAttr()
	var out io.Writer = lf // an *os.File: the child writes to it directly, no copying goroutine
	if p.logTo != nil {
		out = io.MultiWriter(lf, p.logTo)
		// Output is copied by a goroutine that Wait joins; never let a stray holder of the pipe
		// keep Wait (and so stop) from returning.
		cmd.WaitDelay = 5 * time.Second
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.logFile, p.killed = cmd, lf, false
	done := make(chan struct{})
	p.done = done
	go func() {
		p.waitErr = cmd.Wait()
		fmt.Fprintf(lf, "==== %s: %s exited: %v\n", time.Now().Format(time.RFC3339Nano), p.name, p.waitErr)
		lf.Close()
		close(done)
	}()
	return nil
}

// exited reports whether the process has ended (or was never started).
func (p *process) exited() bool {
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop kills the process and waits for it. It returns an error when the process had already ended
// by itself (a crash the caller did not ask for), with the tail of its log. Stopping a process
// that is not running is a no-op.
func (p *process) stop() error {
	if p.done == nil {
		return nil
	}
	var err error
	if p.exited() {
		if !p.killed {
			err = fmt.Errorf("%s had exited unexpectedly: %v%s", p.name, p.waitErr, p.tailForError())
		}
	} else {
		p.killed = true
		// SIGKILL: an outage or teardown needs no graceful shutdown, and it is immediate.
		if kerr := p.cmd.Process.Signal(syscall.SIGKILL); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			err = fmt.Errorf("killing %s: %w", p.name, kerr)
		}
		<-p.done
	}
	p.killed = true
	return err
}

// tail returns the last n lines of the process's log file.
func (p *process) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	return lastLines(data, n)
}

// tailForError formats the end of the log for an error message.
func (p *process) tailForError() string {
	return fmt.Sprintf("\n--- last lines of %s ---\n%s--- end of %s log ---", p.logPath, p.tail(40), p.name)
}

func lastLines(data []byte, n int) string {
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

// portInUse reports whether the log of the latest run says it could not bind its port.
func (p *process) portInUse() bool {
	data, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(data)) < p.runFrom {
		return false
	}
	return bytes.Contains(data[p.runFrom:], []byte("address already in use"))
}

// freePorts returns n distinct ports on 127.0.0.1 that were free a moment ago. Another process
// may still take one before the child binds it: callers retry on "address already in use".
func freePorts(n int) ([]int, error) {
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

// prefixWriter writes each complete line to w as "[name] line", serialized by a mutex shared by
// all the processes of one control plane.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		line := make([]byte, 0, len(pw.prefix)+i+1)
		line = append(append(line, pw.prefix...), pw.buf[:i+1]...)
		pw.buf = pw.buf[i+1:]
		// The log sink failing must not kill the child (a broken pipe would): drop the line.
		_, _ = pw.w.Write(line)
	}
	return len(b), nil
}
