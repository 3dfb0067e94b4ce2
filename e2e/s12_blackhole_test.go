package e2e

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// Keepalive settings of the black-hole scenario. deltaeds pings a silent connection after
// serverKeepaliveTime and ends it serverKeepaliveTimeout later without an answer. The clients
// ping as Envoy does with the connection_keepalive of the bootstrap `deltaeds bootstrap` writes
// (interval and timeout; grpc-go's client pings no more often than every 10 s).
const (
	serverKeepaliveTime    = 2 * time.Second
	serverKeepaliveTimeout = 2 * time.Second
	clientKeepaliveTime    = 10 * time.Second
	clientKeepaliveTimeout = 5 * time.Second
)

// Scenario 12d: clients behind a proxy that starts black-holing their connections (they stay
// open; no byte passes either way, not even a close). deltaeds' gRPC keepalive ends its side
// within --keepalive-time + --keepalive-timeout; each client's own HTTP/2 keepalive ends its side,
// it reconnects (through the same proxy, whose new connections pass again) declaring what it
// holds, and is sent only what changed meanwhile, nothing it holds that is current.
func TestBlackholedClient(t *testing.T) {
	const ns = "s12-blackhole"
	const services = 3
	e := scenario(t, ns)
	slices := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	var names []string
	for i := range services {
		svc := fmt.Sprintf("svc-%d", i)
		if _, err := slices.Create(t.Context(), manualSlice(ns, svc, svc, discoveryv1.AddressTypeIPv4, fmt.Sprintf("10.123.0.%d", i+1)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, translate.ClusterName(ns, svc, httpPort.Name))
	}
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s12-blackhole", ExtraArgs: []string{
		"--keepalive-time", serverKeepaliveTime.String(), "--keepalive-timeout", serverKeepaliveTimeout.String(),
	}})
	proxy, err := newBlackholeProxy(p.XDSAddress())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	rec := &recorder{}
	f := e.fleet(t, envoyfleet.Options{Size: 2, Target: proxy.Addr(), NodePrefix: "s12-blackhole", OnApply: rec.onApply,
		DialOptions: []grpc.DialOption{envoyKeepalive(clientKeepaliveTime, clientKeepaliveTimeout)}})
	f.Subscribe(names...)
	for i, name := range names {
		waitAll(t, "the first endpoints", f, holds(name, []string{fmt.Sprintf("10.123.0.%d", i+1)}, nil))
	}
	mark := rec.mark()
	if err := harness.Eventually(waitCtx(t), func() error { return streamsAre(t, p, len(f.Clients)) }); err != nil {
		t.Fatal(err)
	}

	cut := time.Now()
	proxy.Blackhole()
	// A change while the clients hear nothing: the one thing they must be sent after.
	cur, err := slices.Get(t.Context(), "svc-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Endpoints = manualSlice(ns, "svc-0", "svc-0", discoveryv1.AddressTypeIPv4, "10.123.1.1").Endpoints
	if _, err := slices.Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := harness.Eventually(waitCtx(t), func() error { return streamsAre(t, p, 0) }); err != nil {
		t.Fatalf("deltaeds did not end the black-holed streams: %v", err)
	}
	serverEnded := time.Since(cut)
	waitAll(t, "the change, after reconnecting", f, holds(names[0], []string{"10.123.1.1"}, nil))
	reconnected := time.Since(cut)
	t.Logf("deltaeds ended the black-holed streams %s after the cut (keepalive %s + %s); the clients had reconnected and held the change %s after it (their keepalive %s + %s, then Envoy's reconnect backoff)",
		serverEnded.Round(10*time.Millisecond), serverKeepaliveTime, serverKeepaliveTimeout,
		reconnected.Round(10*time.Millisecond), clientKeepaliveTime, clientKeepaliveTimeout)

	for i, c := range f.Clients {
		if st := c.Stats(); st.Reconnects != 1 {
			t.Errorf("client %d reconnected %d times, want 1", i, st.Reconnects)
		}
	}
	got := rec.since(mark, -1, "")
	for _, ev := range got {
		if ev.name != names[0] {
			t.Errorf("client %d was resent %s@%s after reconnecting; it held it, current", ev.client, ev.name, short(ev.version))
		}
	}
	if len(got) != len(f.Clients) {
		t.Errorf("%d updates after the cut, want %d (the change, once per client)", len(got), len(f.Clients))
	}
	t.Logf("after reconnecting, the %d clients were sent %d updates (the change made during the black hole); %d connections black-holed",
		len(f.Clients), len(got), proxy.Blackholed())
}

// envoyKeepalive is Envoy's HTTP/2 connection_keepalive, as the bootstrap sets it for the
// connection to deltaeds (source/common/http/http2/codec_impl.cc: ConnectionImpl::sendKeepalive
// sends a PING every interval, onKeepaliveResponseTimeout closes the connection when no PING ACK
// came within the timeout).
func envoyKeepalive(interval, timeout time.Duration) grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: interval, Timeout: timeout, PermitWithoutStream: true})
}

// streamsAre returns nil when deltaeds counts n connected streams.
func streamsAre(t *testing.T, p *harness.Deltaeds, n int) error {
	if got := metrics(t, p).Value("deltaeds_xds_streams"); got != float64(n) {
		return fmt.Errorf("deltaeds_xds_streams = %v, want %d", got, n)
	}
	return nil
}

// blackholeProxy forwards TCP connections to a backend until Blackhole, which makes every
// connection open at that moment a black hole: both ends stay open, and nothing reaches either,
// neither bytes nor a close (a dead path through a NAT or a load balancer). Connections made
// later are forwarded.
type blackholeProxy struct {
	l       net.Listener
	backend string

	mu     sync.Mutex
	conns  []*blackholeConn
	closed bool
	wg     sync.WaitGroup
}

type blackholeConn struct {
	in, out net.Conn
	dropped atomic.Bool
}

func newBlackholeProxy(backend string) (*blackholeProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("black-hole proxy: %w", err)
	}
	p := &blackholeProxy{l: l, backend: backend}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *blackholeProxy) Addr() string { return p.l.Addr().String() }

// Blackhole black-holes every connection open now.
func (p *blackholeProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.dropped.Store(true)
	}
}

// Blackholed counts the black-holed connections.
func (p *blackholeProxy) Blackholed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if c.dropped.Load() {
			n++
		}
	}
	return n
}

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.backend)
		if err != nil {
			in.Close()
			continue
		}
		c := &blackholeConn{in: in, out: out}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns = append(p.conns, c)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, c.out, c.in)
		go p.pipe(c, c.in, c.out)
	}
}

// pipe copies src to dst until src ends; once c is black-holed, what src sends is dropped, and
// its end is not passed on.
func (p *blackholeProxy) pipe(c *blackholeConn, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !c.dropped.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !c.dropped.Load() {
				dst.Close()
				src.Close()
			}
			return
		}
	}
}

// Close closes every connection and waits for the proxy's goroutines.
func (p *blackholeProxy) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.l.Close()
	for _, c := range conns {
		c.in.Close()
		c.out.Close()
	}
	p.wg.Wait()
}
