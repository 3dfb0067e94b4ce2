package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// Child is a process whose parent is the current process.
type Child struct {
	Pid   int
	State string // one letter, as in /proc/PID/stat: R, S, Z (zombie: exited, not waited for)...
	Cmd   string
}

func (c Child) String() string { return fmt.Sprintf("pid %d (%s) %s", c.Pid, c.State, c.Cmd) }

// Children lists the live (or unreaped) children of the current process from /proc. It returns
// nothing where /proc does not exist.
func Children() ([]Child, error) {
	procs, err := procfs.AllProcs()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("supervisor: listing /proc: %w", err)
	}
	self := os.Getpid()
	var out []Child
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.PPID != self {
			continue // gone meanwhile, or not ours
		}
		cmd, _ := p.CmdLine()
		out = append(out, Child{Pid: p.PID, State: st.State, Cmd: strings.Join(cmd, " ")})
	}
	return out, nil
}

// Memory returns a process's resident set size and its peak (VmRSS and VmHWM of
// /proc/PID/status), in bytes.
func Memory(pid int) (rss, peak uint64, err error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("supervisor: reading pid %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, 0, fmt.Errorf("supervisor: reading the status of pid %d: %w", pid, err)
	}
	return st.VmRSS, st.VmHWM, nil
}

// SelfCPU is the user plus system CPU time this process has used so far, from getrusage (to the
// microsecond, where /proc's stat counts clock ticks): what benchmarks report per operation, since
// a loaded machine's other work inflates wall time but not this.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
