package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/wait"
)

// envChild makes the test binary play a child: "serve" listens on its one argument and answers
// GET /ready until SIGTERM; "exit" exits with status 3 at once.
const envChild = "SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "serve":
		os.Exit(serveChild(os.Args[len(os.Args)-1]))
	case "exit":
		fmt.Println("exiting with 3")
		os.Exit(3)
	}
	goleak.VerifyTestMain(m)
}

func serveChild(addr string) int {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err) // "listen tcp ...: bind: address already in use"
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	go func() { _ = srv.Serve(l) }()
	fmt.Println("serving on", l.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = srv.Close()
	return 0
}

// child returns a Process that runs this test binary as kind.
func child(t *testing.T, kind string) *Process {
	t.Helper()
	t.Setenv(envChild, kind)
	return New(Spec{Name: "child-" + kind, Path: os.Args[0], LogPath: filepath.Join(t.TempDir(), kind+".log")})
}

// readyAt checks that the child serves on addr.
func readyAt(addr *atomic.Value) Check {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.Load().(string)+"/ready", nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

// listen binds a concrete port the way a stranger would.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// The first run is given a port that a stranger holds: StartReady must see it fail for that
// reason and start again on another port; Stop must then close the child's listener.
func TestStartReadyPicksAnotherPortWhenOneIsTaken(t *testing.T) {
	taken := listen(t)
	p := child(t, "serve")
	var addr atomic.Value
	var picks []string
	pick := func() error {
		a := taken.Addr().String()
		if len(picks) > 0 {
			var err error
			if a, err = FreeAddress(); err != nil {
				return err
			}
		}
		picks = append(picks, a)
		addr.Store(a)
		p.SetArgs([]string{a})
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := p.StartReady(ctx, readyAt(&addr), pick); err != nil {
		t.Fatalf("StartReady: %v", err)
	}
	if len(picks) != 2 {
		t.Fatalf("ports picked: %v, want the taken one then another", picks)
	}
	log, _ := os.ReadFile(p.LogPath())
	if !strings.Contains(string(log), "address already in use") || !strings.Contains(string(log), "serving on "+picks[1]) {
		t.Fatalf("the log shows no failed first run and served second one:\n%s", log)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The child's port is free again: its listener went with it.
	l, err := net.Listen("tcp", picks[1])
	if err != nil {
		t.Fatalf("the child's port %s is still bound after Stop: %v", picks[1], err)
	}
	l.Close()
}

// A restart keeps its port: StartReady retries it until the stranger lets go.
func TestStartReadyRetriesTheSamePortUntilFree(t *testing.T) {
	taken := listen(t)
	p := child(t, "serve")
	var addr atomic.Value
	addr.Store(taken.Addr().String())
	p.SetArgs([]string{taken.Addr().String()})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- p.StartReady(ctx, readyAt(&addr), nil) }()
	// Release the port once a run has failed on it, not before.
	err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		log, _ := os.ReadFile(p.LogPath())
		return strings.Contains(string(log), "address already in use"), nil
	})
	if err != nil {
		t.Fatalf("no run failed on the taken port: %v", err)
	}
	taken.Close()
	if err := <-started; err != nil {
		t.Fatalf("StartReady: %v", err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// A child that ends by itself is reported by Stop and Kill, once, with its log.
func TestUnaskedExitIsAnError(t *testing.T) {
	p := child(t, "exit")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	err := p.Stop(time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited by itself") || !strings.Contains(err.Error(), "exiting with 3") {
		t.Fatalf("Stop after the child ended by itself: %v, want an error with its log", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill after Stop reported the exit: %v", err)
	}
	var exit *exec.ExitError
	if !errors.As(p.ExitErr(), &exit) || exit.ExitCode() != 3 {
		t.Fatalf("ExitErr = %v, want exit status 3", p.ExitErr())
	}
}

// WaitReady gives up as soon as the run exits, saying so.
func TestWaitReadyStopsAtExit(t *testing.T) {
	p := child(t, "exit")
	err := p.StartReady(t.Context(), func(context.Context) error { return errors.New("never ready") }, nil)
	if !errors.Is(err, ErrExitedEarly) {
		t.Fatalf("StartReady of a child that exits: %v, want ErrExitedEarly", err)
	}
}

func TestChildrenAndMemory(t *testing.T) {
	addr, err := FreeAddress()
	if err != nil {
		t.Fatal(err)
	}
	p := child(t, "serve")
	p.SetArgs([]string{addr})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	kids, err := Children()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(kids, func(c Child) bool { return c.Pid == p.Pid() && strings.Contains(c.Cmd, addr) }) {
		t.Errorf("Children() = %v, want pid %d running with %s", kids, p.Pid(), addr)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	kids, _ = Children()
	if slices.ContainsFunc(kids, func(c Child) bool { return c.Pid == p.Pid() }) {
		t.Errorf("pid %d still listed after Kill: %v", p.Pid(), kids)
	}
	rss, peak, err := Memory(os.Getpid())
	if err != nil || rss == 0 || peak < rss {
		t.Errorf("Memory(self) = %d, %d, %v: want a resident size and a peak at least as large", rss, peak, err)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 5, "a\nb\nc\n"},
		{"", 3, "\n"},
		{"only\n", 1, "only\n"},
	} {
		if got := LastLines([]byte(tc.in), tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
