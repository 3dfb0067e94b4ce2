package envoysim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"k8s.io/apimachinery/pkg/util/wait"
)

// frontDoor is a TCP listener in front of a server: it counts the
// connections it accepts and, after holdFor, either pipes each to backend or
// (backend "") keeps it open and silent.
type frontDoor struct {
	addr     string
	accepted atomic.Int32
	stop     func()
}

func newFrontDoor(t *testing.T, backend string, holdFor time.Duration) *frontDoor {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &frontDoor{addr: lis.Addr().String()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			d.accepted.Add(1)
			track(in)
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-done:
					return
				case <-time.After(holdFor):
				}
				if backend == "" {
					return // silent: the connection stays open until stop
				}
				out, err := net.Dial("tcp", backend)
				if err != nil {
					in.Close()
					return
				}
				track(out)
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = io.Copy(out, in)
					out.Close()
				}()
				_, _ = io.Copy(in, out)
				in.Close()
			}()
		}
	}()
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			close(done)
			lis.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(d.stop)
	return d
}

// Envoy's connect timer stops at the Connected event (TCP up, TLS done);
// the HTTP/2 preface that follows is not timed (ConnPoolImplBase::
// onConnectionEvent, source/common/conn_pool/conn_pool_base.cc). A server
// slow to answer on a connection already established is waited for: the
// client keeps its one connection and opens its stream on it.
func TestSlowPrefaceIsWaitedFor(t *testing.T) {
	f := newFake(t)
	const connectTimeout = 50 * time.Millisecond
	door := newFrontDoor(t, f.addr, 10*connectTimeout)
	c := startClient(t, f, Config{Target: door.addr, ConnectTimeout: connectTimeout})
	c.Subscribe("a")
	fs := f.nextStream(t)
	if req := fs.recv(t); req.GetNode().GetId() != c.cfg.NodeID {
		t.Fatalf("first request has no node: %v", req)
	}
	if n := door.accepted.Load(); n != 1 {
		t.Errorf("the client made %d connections, want 1: it gave up on a connection whose server was slow to speak", n)
	}
}

// The TLS handshake is part of what Envoy's connect timeout bounds: a server
// that accepts TCP and never answers the ClientHello is given up on after
// ConnectTimeout, and the client tries again.
func TestTLSHandshakeIsBoundedByConnectTimeout(t *testing.T) {
	door := newFrontDoor(t, "", time.Hour)
	creds := credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS13})
	c := New(Config{NodeID: "node-1", Cluster: "cluster-1", Target: door.addr, Creds: creds,
		ConnectTimeout: 50 * time.Millisecond, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.Subscribe("a")
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		return door.accepted.Load() >= 2, nil
	}); err != nil {
		t.Fatalf("the client never gave up on a handshake that got no answer (%d connections): %v", door.accepted.Load(), err)
	}
}
