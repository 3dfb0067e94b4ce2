package envoysim

import (
	"context"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

type adsStream = grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]

// stream is the client's bookkeeping for one Delta ADS stream. The fields
// set at creation are immutable; the others are guarded by Client.mu. The
// gRPC stream itself is touched only by the run goroutine (Recv) and the
// stream's writer goroutine (Send).
type stream struct {
	id     uint64
	ctx    context.Context
	cancel context.CancelFunc
	// wake has capacity one: a send that finds it full is already pending,
	// so waking never blocks and wakes coalesce.
	wake chan struct{}

	// Guarded by Client.mu.

	// initialSent is set once the first request, with node and
	// initial_resource_versions, has been handed to the writer.
	initialSent bool
	// told is what the server has been told the client wants on this
	// stream; pendingSub and pendingUnsub are the changes to tell it next.
	told, pendingSub, pendingUnsub map[string]struct{}
	// unsubscribed holds names unsubscribed on this stream: responses for
	// them may have crossed the unsubscribe, so they are not violations.
	unsubscribed map[string]struct{}
	// acks are the ACKs and NACKs still to send, in response order.
	acks []ack
	// nonces holds every nonce seen on this stream, to catch reuse.
	nonces map[string]struct{}
	// dropped is set by Disconnect, so the stream is reopened at once.
	dropped bool
	// responded is set when a response arrives, to reset the backoff.
	responded bool
}

type ack struct {
	nonce  string
	reason string // empty for an ACK, the error_detail message for a NACK
}

func newStream(id uint64, ctx context.Context, cancel context.CancelFunc) *stream {
	return &stream{
		id:           id,
		ctx:          ctx,
		cancel:       cancel,
		wake:         make(chan struct{}, 1),
		told:         make(map[string]struct{}),
		pendingSub:   make(map[string]struct{}),
		pendingUnsub: make(map[string]struct{}),
		unsubscribed: make(map[string]struct{}),
		nonces:       make(map[string]struct{}),
	}
}

func (st *stream) wakeWriter() {
	if st == nil {
		return
	}
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// run is the client's goroutine: it keeps a stream open until ctx is done.
func (c *Client) run(ctx context.Context, conn *grpc.ClientConn, owned bool) {
	defer close(c.done)
	if owned {
		defer func() {
			if err := conn.Close(); err != nil {
				c.log.Warn("closing connection", zap.Error(err))
			}
		}()
	}
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	retry := newRetryBackoff(c.cfg.Backoff, c.cfg.MaxBackoff)
	for {
		_, responded := c.runStream(ctx, ads)
		if ctx.Err() != nil {
			return
		}
		// GrpcStream::onReceiveMessage resets the backoff once a stream
		// has delivered a message; every closed stream, whatever closed
		// it, arms the retry timer (GrpcStream::onRemoteClose ->
		// setRetryTimer, source/common/config/grpc_stream.h).
		if responded {
			retry.reset()
		}
		t := time.NewTimer(retry.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// retryBackoff is Envoy's JitteredExponentialBackOffStrategy
// (source/common/common/backoff_strategy.cc, nextBackOffMs): each delay is
// uniformly random below the current interval, which doubles up to the
// maximum; reset goes back to the base. Owned by the run goroutine.
type retryBackoff struct {
	base, max, interval time.Duration
}

func newRetryBackoff(base, max time.Duration) *retryBackoff {
	return &retryBackoff{base: base, max: max, interval: base}
}

func (b *retryBackoff) next() time.Duration {
	d := b.interval
	if b.interval < b.max/2 {
		b.interval *= 2
	} else {
		b.interval = b.max
	}
	if d <= 0 {
		return 0
	}
	return min(rand.N(d), b.max)
}

func (b *retryBackoff) reset() { b.interval = b.base }

// runStream opens one stream and reads it until it breaks or ctx is done. It
// reports whether Disconnect dropped the stream and whether any response
// arrived on it.
func (c *Client) runStream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (dropped, responded bool) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := ads.DeltaAggregatedResources(sctx)
	if err != nil {
		c.log.Info("opening stream failed", zap.Error(err))
		return false, false
	}

	c.mu.Lock()
	c.stats.Streams++
	if c.stats.Streams > 1 {
		c.stats.Reconnects++
	}
	st := newStream(c.stats.Streams, sctx, cancel)
	c.st = st
	c.notifyLocked()
	c.mu.Unlock()
	log := c.log.With(zap.Uint64("stream", st.id))
	log.Debug("stream opened")

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(st, s, log)
	}()
	st.wakeWriter() // the initial request may be due already

	err = c.readLoop(st, s)
	cancel() // stops the writer if the read side failed first
	<-writerDone

	c.mu.Lock()
	c.st = nil
	dropped, responded = st.dropped, st.responded
	c.notifyLocked()
	c.mu.Unlock()

	switch {
	case ctx.Err() != nil:
		log.Debug("stream closed: client stopping")
	case dropped:
		log.Info("stream dropped by Disconnect")
	case errors.Is(err, io.EOF):
		log.Info("stream closed by server")
	default:
		log.Info("stream broken", zap.Error(err), zap.Stringer("code", grpcstatus.Code(err)))
	}
	return dropped, responded
}

// readLoop receives and handles responses until the stream fails.
func (c *Client) readLoop(st *stream, s adsStream) error {
	for {
		c.mu.Lock()
		resume := c.resume
		c.mu.Unlock()
		if resume != nil {
			select {
			case <-resume:
			case <-st.ctx.Done():
				return st.ctx.Err()
			}
			continue // Stall may have been turned on again meanwhile
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		c.handle(st, resp, time.Now())
	}
}

// writeLoop is the stream's only sender. It sends whatever request is due
// until the stream's context ends or a Send fails.
func (c *Client) writeLoop(st *stream, s adsStream, log *zap.Logger) {
	for {
		c.mu.Lock()
		req, kind := c.nextRequestLocked(st)
		c.mu.Unlock()
		if req == nil {
			select {
			case <-st.wake:
				continue
			case <-st.ctx.Done():
				return
			}
		}
		if err := s.Send(req); err != nil {
			// The read side sees the same failure; make sure it does even
			// if the server keeps the read side open.
			log.Info("send failed", zap.Error(err), zap.String("nonce", req.GetResponseNonce()))
			st.cancel()
			return
		}
		c.mu.Lock()
		c.stats.Requests++
		switch kind {
		case reqACK:
			c.stats.ACKs++
		case reqNACK:
			c.stats.NACKs++
		}
		c.notifyLocked()
		c.mu.Unlock()
	}
}

// reqKind says whether a request answers a response.
type reqKind int

const (
	reqPlain reqKind = iota
	reqACK
	reqNACK
)

// nextRequestLocked returns the next request due on st, or nil if none is.
// It records what the request tells the server, so it must be sent.
func (c *Client) nextRequestLocked(st *stream) (*discoveryv3.DeltaDiscoveryRequest, reqKind) {
	if !st.initialSent {
		// A first request without names asks for the wildcard, so nothing
		// is sent until there is something to ask for.
		if len(c.want) == 0 && !c.cfg.Wildcard {
			return nil, reqPlain
		}
		st.initialSent = true
		st.told = maps.Clone(c.want)
		clear(st.pendingSub)
		clear(st.pendingUnsub)
		names := slices.Sorted(maps.Keys(c.want))
		if c.cfg.Wildcard {
			names = append([]string{"*"}, names...)
		}
		req := &discoveryv3.DeltaDiscoveryRequest{
			Node:                   c.node(),
			TypeUrl:                c.cfg.TypeURL,
			ResourceNamesSubscribe: names,
		}
		if len(c.held) > 0 {
			req.InitialResourceVersions = make(map[string]string, len(c.held))
			for n, h := range c.held {
				req.InitialResourceVersions[n] = h.version
			}
		}
		return req, reqPlain
	}

	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: c.cfg.TypeURL}
	due, kind := false, reqPlain
	if len(st.acks) > 0 {
		a := st.acks[0]
		st.acks[0] = ack{}
		st.acks = st.acks[1:]
		req.ResponseNonce = a.nonce
		kind = reqACK
		if a.reason != "" {
			// Envoy reports every rejection as INTERNAL.
			req.ErrorDetail = &status.Status{Code: int32(codes.Internal), Message: a.reason}
			kind = reqNACK
		}
		due = true
	}
	// Like Envoy, pending subscription changes ride on whatever request
	// goes next, ACK or not.
	if len(st.pendingSub) > 0 {
		req.ResourceNamesSubscribe = slices.Sorted(maps.Keys(st.pendingSub))
		for n := range st.pendingSub {
			st.told[n] = struct{}{}
		}
		clear(st.pendingSub)
		due = true
	}
	if len(st.pendingUnsub) > 0 {
		req.ResourceNamesUnsubscribe = slices.Sorted(maps.Keys(st.pendingUnsub))
		for n := range st.pendingUnsub {
			delete(st.told, n)
			st.unsubscribed[n] = struct{}{}
		}
		clear(st.pendingUnsub)
		due = true
	}
	if !due {
		return nil, reqPlain
	}
	return req, kind
}

// node is what the first request of every stream says the client is.
func (c *Client) node() *corev3.Node {
	return &corev3.Node{Id: c.cfg.NodeID, Cluster: c.cfg.Cluster, Locality: c.cfg.Locality, Metadata: c.cfg.Metadata}
}
