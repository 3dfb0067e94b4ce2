package watch

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fakeAPI is an API server that is up or down: its /readyz and its list/watch calls fail with
// "connection refused" while it is down.
type fakeAPI struct {
	down   atomic.Bool
	probes atomic.Int64
	calls  atomic.Int64
	// readyz, if set, is what /readyz answers while up.
	readyz error
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func (f *fakeAPI) probe(context.Context) error {
	f.probes.Add(1)
	if f.down.Load() {
		return errRefused
	}
	return f.readyz
}

func (f *fakeAPI) call(context.Context) error {
	f.calls.Add(1)
	if f.down.Load() {
		return errRefused
	}
	return nil
}

func startAPIServer(t *testing.T, f *fakeAPI) *apiServer {
	t.Helper()
	a := newAPIServer(f.probe, 10*time.Second, zap.NewNop(), NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}

// A call made while the API server is down (goroutine leaks are checked by TestMain) fails once, is then held without being tried again
// (only /readyz is asked, once a second), and goes out as soon as a probe finds it back.
func TestHoldWhileDown(t *testing.T) {
	f := &fakeAPI{}
	a := startAPIServer(t, f)
	eventually(t, "the first probe", func() bool { ok, _ := a.health(); return !ok.IsZero() })
	f.down.Store(true) // the next periodic probe is 10 s away: the call finds out

	errc := make(chan error, 1)
	go func() { errc <- a.hold(t.Context(), f.call) }()
	eventually(t, "the outage to be seen", func() bool { _, err := a.health(); return err != nil })
	probes := f.probes.Load()
	eventually(t, "two more probes", func() bool { return f.probes.Load() >= probes+2 })
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d list/watch calls reached the down API server, want 1: held calls must wait for /readyz", n)
	}
	select {
	case err := <-errc:
		t.Fatalf("hold returned %v while the API server is down; the reflector would back off", err)
	default:
	}

	f.down.Store(false)
	back := time.Now()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("hold after the API server came back: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the held call never went out after the API server came back")
	}
	t.Logf("held call went out %s after the API server came back (probe every %s while down); %d probes, %d calls",
		time.Since(back).Round(time.Millisecond), a.retry, f.probes.Load(), f.calls.Load())
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2 (the failed one and the one after recovery)", n)
	}
	if _, err := a.health(); err != nil {
		t.Errorf("health after recovery: %v", err)
	}
}

// A failing call is the reflector's to handle when /readyz answers (a blip, or a problem of
// that call), when it refuses to say (403), and when the call got an API error.
func TestHoldReturnsErrorsWhenNotDown(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "readyz"}, "", errors.New("no"))
	gone := apierrors.NewResourceExpired("too old resource version")
	for _, tc := range []struct {
		name   string
		readyz error
		err    error
	}{
		{"readyz answers", nil, errRefused},
		{"readyz forbidden", forbidden, errRefused},
		{"410 Gone", nil, gone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAPI{readyz: tc.readyz}
			a := startAPIServer(t, f)
			calls := 0
			err := a.hold(t.Context(), func(context.Context) error { calls++; return tc.err })
			if !errors.Is(err, tc.err) || calls != 1 {
				t.Fatalf("hold = %v after %d calls, want %v after 1", err, calls, tc.err)
			}
		})
	}
}

// A held call ends with its context.
func TestHoldEndsWithContext(t *testing.T) {
	f := &fakeAPI{}
	a := startAPIServer(t, f)
	f.down.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- a.hold(ctx, f.call) }()
	eventually(t, "the outage to be seen", func() bool { _, err := a.health(); return err != nil })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("hold = %v, want context.Canceled", err)
	}
}
