package envoysim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// ErrClosed is returned by [Client.Start] after [Client.Close], and by
// [Client.WaitFor] when the client stopped before the predicate held.
var ErrClosed = errors.New("envoysim: client closed")

// Envoy's xDS stream retry backoff: SubscriptionFactory::RetryInitialDelayMs
// and RetryMaxDelayMs (envoy/config/subscription_factory.h), used by
// GrpcStream (source/common/config/grpc_stream.h).
const (
	defaultBackoff    = 500 * time.Millisecond
	defaultMaxBackoff = 30 * time.Second
	// defaultConnectTimeout is Envoy's default cluster connect_timeout
	// (envoy/config/cluster/v3/cluster.proto: "If not set, a default value
	// of 5s will be used").
	defaultConnectTimeout = 5 * time.Second
	// handshakeUnbounded stands for "no deadline" on the gRPC connection as
	// a whole: gRPC-Go bounds dial plus handshake plus HTTP/2 preface by
	// MinConnectTimeout, Envoy bounds none of the preface (see dial).
	handshakeUnbounded = time.Hour
)

// transportBackoff is the gRPC connection's own reconnect backoff. Envoy
// opens a new stream (and, through its cluster, a connection) when its retry
// timer fires, and arms that timer again when the stream cannot start
// (GrpcStream::establishNewStream and setRetryTimer,
// source/common/config/grpc_stream.h), so the stream backoff above is what
// paces reconnects; the transport's is kept short so it does not add a
// second, slower backoff on top.
var transportBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}

// Client is a simulated Envoy speaking Delta ADS for one type. Create it
// with [New], start it with [Client.Start] or [Client.Run], stop it with
// [Client.Close]. All methods are safe for concurrent use.
type Client struct {
	cfg Config // immutable after New
	log *zap.Logger

	// done is closed when the run goroutine has exited, or by Close if the
	// client was never started.
	done chan struct{}

	lifeMu  sync.Mutex // guards started, stopped, cancel
	started bool
	stopped bool
	cancel  context.CancelFunc

	mu sync.Mutex // guards everything below, and the fields of *stream it says
	// want is the subscription: the names the client wants, without "*".
	want map[string]struct{}
	// held is the xDS state: what the client has accepted, by name, and
	// declares on reconnect; removed marks wanted names whose latest news
	// was a removal, with when it arrived.
	held    map[string]*entry
	removed map[string]time.Time
	// routes is what Envoy's clusters route with, by name: every applied
	// resource, kept through removals (see Route).
	routes map[string]*entry
	// st is the live stream, nil between streams.
	st *stream
	// resume is non-nil while stalled; closing it resumes reading.
	resume chan struct{}
	// changed is closed (and reset to nil) on every change of state; it is
	// created only when a WaitFor needs it, so changes cost nothing when
	// nobody waits.
	changed chan struct{}
	// applying is set while Config.OnApply runs for a response already
	// applied: WaitFor holds its predicate until OnApply has returned.
	applying   bool
	stats      Stats // Violations kept separately, see violations
	violations []Violation
}

// New returns a client for cfg, with defaults filled in. It does not
// connect: see [Client.Start]. Configuration errors are reported by Start.
func New(cfg Config) *Client {
	if cfg.TypeURL == "" {
		cfg.TypeURL = TypeURLClusterLoadAssignment
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = defaultBackoff
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(defaultMaxBackoff, cfg.Backoff)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Client{
		cfg:     cfg,
		log:     log.With(zap.String("node_id", cfg.NodeID), zap.String("type_url", cfg.TypeURL)),
		done:    make(chan struct{}),
		want:    make(map[string]struct{}),
		held:    make(map[string]*entry),
		removed: make(map[string]time.Time),
		routes:  make(map[string]*entry),
	}
}

// Start connects (or adopts Config.Conn) and starts the goroutine that keeps
// a stream open until ctx is cancelled or [Client.Close] is called. It fails
// on a bad configuration, a target that cannot be parsed, a second call, or
// after Close; it does not wait for the server to be reachable.
func (c *Client) Start(ctx context.Context) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.stopped:
		return ErrClosed
	case c.started:
		return errors.New("envoysim: client already started")
	case c.cfg.NodeID == "":
		return errors.New("envoysim: Config.NodeID is required")
	case c.cfg.Conn == nil && c.cfg.Target == "":
		return errors.New("envoysim: Config.Target or Config.Conn is required")
	}
	conn, owned := c.cfg.Conn, false
	if conn == nil {
		var err error
		if conn, err = c.dial(); err != nil {
			return fmt.Errorf("envoysim: dial %s: %w", c.cfg.Target, err)
		}
		owned = true
	}
	rctx, cancel := context.WithCancel(ctx)
	c.started, c.cancel = true, cancel
	go c.run(rctx, conn, owned)
	return nil
}

// dial makes the client's connection the way Envoy's connection pool times
// one: the connect timer starts with the connection and stops at its
// Connected event (ConnPoolImplBase::ActiveClient's connect_timer_, disabled
// in ConnPoolImplBase::onConnectionEvent, source/common/conn_pool/
// conn_pool_base.cc), which ConnectionImpl raises once TCP is connected and
// the transport socket (TLS) has finished its handshake. The HTTP/2 preface
// and SETTINGS exchange come after and are not timed. gRPC-Go instead bounds
// all of it by MinConnectTimeout, so a server slow to send its preface (a
// thousand connections at once on a busy machine) would see every client
// give up and retry, again and again, where Envoys wait: here TCP gets
// ConnectTimeout in the dialer, the TLS handshake gets ConnectTimeout too
// (Envoy's budget covers both together: a small overestimate), and the
// connection as a whole is left unbounded.
func (c *Client) dial() (*grpc.ClientConn, error) {
	creds := c.cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	timeout := c.cfg.ConnectTimeout
	dialer := &net.Dialer{Timeout: timeout}
	// Callers can override the transport backoff in DialOptions.
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(boundedHandshake{TransportCredentials: creds, timeout: timeout}),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: transportBackoff, MinConnectTimeout: handshakeUnbounded}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(requestCodec{proto: encoding.GetCodecV2(grpcproto.Name)})),
	}
	return grpc.NewClient(c.cfg.Target, append(opts, c.cfg.DialOptions...)...)
}

// requestCodec encodes requests into buffers of their own size and leaves
// decoding to grpc's proto codec. grpc's codec encodes a message of more
// than 32 KB into a pooled buffer from its default pool, which has no tier
// between 32 KB and 1 MB: a first request naming a thousand clusters
// (~40 KB) takes 1 MB until the transport has written it and the pool lets
// it go. A fleet of thousands of clients connecting at once on cores it
// shares then held gigabytes of them (a heap profile of the bench's
// 1,000-stream fleet at its peak: 355 MB of 1 MB request buffers). Envoy
// encodes each gRPC message into one buffer reserved for exactly its size
// plus the 5-byte frame header (source/common/grpc/common.cc,
// Common::serializeToGrpcFrame: body->reserveSingleSlice(size + 5)), so a
// buffer of the request's own size is also what Envoy holds while a request
// waits to be written; the bytes sent are the same either way.
type requestCodec struct{ proto encoding.CodecV2 }

func (c requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.proto.Marshal(v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("envoysim: encode request: %w", err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }
func (c requestCodec) Name() string                                { return c.proto.Name() }

// boundedHandshake gives the transport credentials' client handshake (TLS)
// the connect timeout, the part of Envoy's connect timer that comes after
// TCP (see dial).
type boundedHandshake struct {
	credentials.TransportCredentials
	timeout time.Duration
}

func (b boundedHandshake) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (b boundedHandshake) Clone() credentials.TransportCredentials {
	return boundedHandshake{TransportCredentials: b.TransportCredentials.Clone(), timeout: b.timeout}
}

// Run starts the client and blocks until ctx is cancelled or Close is
// called, then stops it. It returns an error only if Start fails.
func (c *Client) Run(ctx context.Context) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-c.done
	return c.Close()
}

// Close stops the client and waits until its goroutines have exited and the
// connection it dialled (not a Config.Conn) is closed. It is idempotent.
// What the client held stays readable.
func (c *Client) Close() error {
	c.lifeMu.Lock()
	wasStopped := c.stopped
	c.stopped = true
	if c.started {
		c.cancel()
	} else if !wasStopped {
		close(c.done)
	}
	c.lifeMu.Unlock()
	<-c.done
	return nil
}

// Done is closed once the client has stopped, whether by Close or by the
// cancellation of the context given to Start.
func (c *Client) Done() <-chan struct{} { return c.done }

// Subscribe adds names to the subscription. The change is sent on the live
// stream without waiting for it, or in the first request of the next one.
// Names already wanted are ignored; "" and "*" are not names (see
// Config.Wildcard) and are ignored too.
func (c *Client) Subscribe(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	added := false
	for _, n := range names {
		if n == "" || n == "*" {
			continue
		}
		if _, ok := c.want[n]; ok {
			continue
		}
		c.want[n] = struct{}{}
		added = true
		if st := c.st; st != nil {
			// Like Envoy, resubscribing to a name whose unsubscribe is
			// still queued sends the subscribe again rather than cancelling
			// the unsubscribe: the client dropped the resource when it
			// unsubscribed, so the server must send it again.
			delete(st.pendingUnsub, n)
			st.pendingSub[n] = struct{}{}
		}
	}
	if added {
		c.st.wakeWriter()
		c.notifyLocked()
	}
}

// Unsubscribe removes names from the subscription and drops what the client
// held and routed with for them, as Envoy does when the cluster (the last
// watcher of a name) goes away: ClusterManagerImpl::removeCluster
// (source/common/upstream/cluster_manager_impl.cc) erases the active
// cluster, and its EDS subscription and hosts with it.
func (c *Client) Unsubscribe(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	removed := false
	for _, n := range names {
		if _, ok := c.want[n]; !ok {
			continue
		}
		delete(c.want, n)
		delete(c.held, n)
		delete(c.removed, n)
		delete(c.routes, n)
		removed = true
		if st := c.st; st != nil {
			delete(st.pendingSub, n)
			// A name the server was never told about needs no unsubscribe.
			if _, told := st.told[n]; told {
				st.pendingUnsub[n] = struct{}{}
			}
		}
	}
	if removed {
		c.st.wakeWriter()
		c.notifyLocked()
	}
}

// Subscribed returns the names the client wants, sorted.
func (c *Client) Subscribed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.want))
}

// HeldAll returns a copy of the xDS state's resources by name: what the
// server last said, and what the client declares on reconnect.
func (c *Client) HeldAll() map[string]Held {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Held, len(c.held))
	for n, e := range c.held {
		out[n] = e.held()
	}
	return out
}

// Held returns the xDS state's resource with the given name.
func (c *Client) Held(name string) (Held, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{c}.Held(name)
}

// Routes returns a copy of what the client routes with, by name: what an
// Envoy would send traffic to. Tests that ask where traffic goes use this,
// not HeldAll.
func (c *Client) Routes() map[string]Route {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Route, len(c.routes))
	for n, e := range c.routes {
		out[n] = e.route()
	}
	return out
}

// Route returns what the client routes with for name.
func (c *Client) Route(name string) (Route, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{c}.Route(name)
}

// Removed reports whether the latest news about a wanted name was a removal
// (as opposed to a resource, or nothing at all). It says nothing about
// routing: Envoy keeps routing with the last resource after a removal.
func (c *Client) Removed(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.removed[name]
	return ok
}

// Stats returns a copy of the client's counters and violations.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statsLocked()
}

func (c *Client) statsLocked() Stats {
	s := c.stats
	s.Violations = slices.Clone(c.violations)
	return s
}

// Violations returns the protocol violations seen so far, oldest first.
func (c *Client) Violations() []Violation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

// WaitFor blocks until pred holds over the client's state, ctx is done, or
// the client stops. pred is evaluated at once and again after every change,
// under the client's lock: it must be quick and must not call the Client. A
// response is visible to pred only once Config.OnApply has returned for it.
func (c *Client) WaitFor(ctx context.Context, pred func(State) bool) error {
	for {
		c.mu.Lock()
		if !c.applying && pred(State{c}) {
			c.mu.Unlock()
			return nil
		}
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		changed := c.changed
		c.mu.Unlock()

		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("envoysim: node %s: wait for state: %w", c.cfg.NodeID, ctx.Err())
		case <-c.done:
			c.mu.Lock()
			ok := pred(State{c})
			c.mu.Unlock()
			if ok {
				return nil
			}
			return ErrClosed
		}
	}
}

// notifyLocked wakes every WaitFor. Callers hold c.mu.
func (c *Client) notifyLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// Stall stops (true) or resumes (false) reading from the stream. While
// stalled the client does not call Recv, so gRPC flow control eventually
// blocks the server's sends to it; a Recv already waiting when Stall(true)
// is called still returns, so at most one more response may be applied.
// Queued ACKs are still sent. The stall outlives reconnects.
func (c *Client) Stall(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.resume == nil:
		c.resume = make(chan struct{})
	case !on && c.resume != nil:
		close(c.resume)
		c.resume = nil
	}
}

// Disconnect drops the current stream, if any. The client reopens a new one
// after its backoff, as Envoy does for any stream that closes
// (GrpcStream::onRemoteClose arms setRetryTimer,
// source/common/config/grpc_stream.h), presenting
// initial_resource_versions for what it holds.
func (c *Client) Disconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st != nil {
		c.st.dropped = true
		c.st.cancel()
	}
}
