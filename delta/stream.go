package delta

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/deltaeds/deltaeds/xds"
)

type deltaStream = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]

// stream is the protocol state of one Delta xDS stream. Every field but info
// is owned by the stream's handler goroutine and touched by nobody else.
type stream struct {
	server      *Server
	grpc        deltaStream
	defaultType string // for DeltaEndpoints, whose requests may omit type_url
	log         *zap.Logger
	notify      chan struct{}

	nodeID string
	// view is where the client runs, read from the first request's node
	// and fixed for the stream's life (see viewOf).
	view    xds.View
	types   map[string]*typeState
	order   []*typeState    // types in the order first requested, for fair sends
	ignored map[string]bool // ignored type URLs logged, at most maxIgnoredTypesLogged (+1 when full)
	// missingLogged holds the missing names logged, at most
	// maxMissingLogged; nil once missingFull (see missing.go).
	missingLogged map[missingKey]struct{}
	missingFull   bool
	// missingOnSync is set when names were subscribed before the store was
	// synced: they are checked once it is.
	missingOnSync bool

	infoMu   sync.Mutex // guards infoData and infoSubs
	infoData StreamInfo
	infoSubs []*xds.Subscription
}

// typeState is one type's protocol state on one stream.
type typeState struct {
	url string
	sub *xds.Subscription

	nonce    string // of the latest response; "" before the first
	inflight bool   // the latest response awaits its ACK or NACK
	// inflightObserved holds the upstream observation times of the resources
	// in flight, for ACK latency; nil when none had one.
	inflightObserved []time.Time
	// inflightNames names the resources the in-flight response carried:
	// Envoy's NACK does not repeat them, and after a NACK each is resent
	// alone (xds.Subscription.Rejected).
	inflightNames []string

	responses, resources, removals, bytes, acks, nacks, stale prometheus.Counter
}

// maxLoggedNames bounds the resource names a NACK log line carries.
const maxLoggedNames = 20

var errStopping = status.Error(codes.Unavailable, "deltaeds is shutting down")

// serve runs one Delta xDS stream until the client goes away, the server
// stops, or the client breaks a rule (ending the stream with a status).
func (s *Server) serve(gs deltaStream, defaultType string) error {
	ctx := gs.Context()
	st := &stream{
		server:      s,
		grpc:        gs,
		defaultType: defaultType,
		log:         s.log,
		notify:      make(chan struct{}, 1),
		types:       make(map[string]*typeState),
		ignored:     make(map[string]bool),
	}
	st.infoData.ConnectedAt = time.Now()
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		st.infoData.Peer = p.Addr.String()
	}
	// Checking stopped and joining wg under one lock orders every Add before
	// Stop's Wait: Stop closes stopped under the same lock.
	s.mu.Lock()
	select {
	case <-s.stopped:
		s.mu.Unlock()
		return errStopping
	default:
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.metrics.Streams.Inc()
	defer func() {
		for _, ts := range st.types {
			ts.sub.Close()
		}
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.metrics.Streams.Dec()
		s.wg.Done()
	}()

	// The receiver only reads: it ends when Recv fails, which happens once
	// the client goes away or this handler returns and gRPC cancels ctx.
	requests := make(chan *discoveryv3.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := gs.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case requests <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	acks := newAckTimer(s.cfg.AckTimeout) // see acktimeout.go
	defer acks.stop()
	for {
		select {
		case <-s.stopped:
			return errStopping
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if st.nodeID != "" {
				st.log.Debug("stream closed by client", zap.Error(err))
			}
			return nil
		case req := <-requests:
			if err := st.handle(req); err != nil {
				return err
			}
		case <-acks.C:
			if err := acks.fired(st); err != nil {
				return err
			}
		case <-st.notify:
		}
		st.checkMissingOnSync()
		if err := st.sendPending(); err != nil {
			return err
		}
		acks.update(st)
	}
}

// reject counts and logs a request that ends the stream, and returns the
// status to end it with.
func (st *stream) reject(reason string, code codes.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st.server.metrics.RejectedRequests.WithLabelValues(reason).Inc()
	st.log.Warn("rejecting Delta xDS stream", zap.String("reason", reason), zap.String("error", msg))
	return status.Error(code, msg)
}

// handle applies one request: node check, ACK/NACK bookkeeping, subscription
// changes.
func (st *stream) handle(req *discoveryv3.DeltaDiscoveryRequest) error {
	if st.nodeID == "" {
		if req.GetNode().GetId() == "" {
			return st.reject("missing_node", codes.InvalidArgument, "the first request of a stream must carry node.id")
		}
		st.nodeID = req.GetNode().GetId()
		st.log = st.log.With(zap.String("node_id", st.nodeID))
		// Shown at once: the view may wait for the first sync (viewOf).
		st.infoMu.Lock()
		st.infoData.NodeID = st.nodeID
		st.infoMu.Unlock()
		st.view = st.viewOf(req.GetNode())
		if st.view.Zone != "" {
			st.log = st.log.With(zap.String("zone", st.view.Zone))
		}
		if st.view.Node != "" {
			st.log = st.log.With(zap.String("node_name", st.view.Node))
		}
		st.infoMu.Lock()
		st.infoData.View = st.view
		st.infoMu.Unlock()
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		typeURL = st.defaultType
	}
	if typeURL == "" {
		return st.reject("missing_type_url", codes.InvalidArgument, "type_url is required on aggregated (ADS) streams")
	}
	if typeURL != st.defaultType && st.defaultType != "" {
		return st.reject("wrong_type_url", codes.InvalidArgument, "this service serves only %s, got %s", st.defaultType, truncate(typeURL, 256))
	}
	if !st.server.store.HasType(typeURL) {
		st.ignore(typeURL)
		return nil
	}

	ts, first := st.types[typeURL], false
	if ts == nil {
		first = true
		ts = st.newTypeState(typeURL)
	}

	if nonce := req.GetResponseNonce(); nonce != "" {
		switch {
		case ts.inflight && nonce == ts.nonce:
			st.acknowledge(ts, req)
		default:
			ts.stale.Inc()
			st.log.Debug("stale nonce", zap.String("type_url", typeURL), zap.String("nonce", nonce), zap.String("latest_nonce", ts.nonce))
		}
	}

	change := xds.SubscriptionChange{Subscribe: req.GetResourceNamesSubscribe(), Unsubscribe: req.GetResourceNamesUnsubscribe()}
	if first {
		change.InitialVersions = req.GetInitialResourceVersions()
		// Legacy wildcard: a first request that subscribes and unsubscribes
		// nothing. The wildcard then lasts until the client unsubscribes
		// "*" (xds_protocol.rst's incremental example; Envoy keeps "*" in
		// requested_resource_state_, delta_subscription_state.cc), also
		// after it names resources.
		if len(change.Subscribe) == 0 && len(change.Unsubscribe) == 0 {
			change.Subscribe = []string{xds.Wildcard}
		}
	}
	if len(change.Subscribe) == 0 && len(change.Unsubscribe) == 0 && len(change.InitialVersions) == 0 {
		return nil
	}
	if err := ts.sub.Update(change); err != nil {
		if errors.Is(err, xds.ErrTooManyNames) {
			return st.reject("too_many_names", codes.ResourceExhausted, "type %s: %v (raise --max-subscriptions-per-stream)", typeURL, err)
		}
		return status.Errorf(codes.Internal, "update subscription: %v", err)
	}
	st.noteMissing(ts, change.Subscribe)
	return nil
}

// viewOf reads where the client runs from the node of a stream's first
// request: the zone from node.locality.zone, the node name from the
// node.metadata field Config.NodeNameMetadataKey names (a string), and,
// when only the node name is told, the zone from Config.ZoneOfNode. Like
// the node id, it is read once: the node of later requests is ignored (Envoy
// sends it on the first request only), so the view is fixed for the
// stream's life. A part longer than maxViewPart is ignored, with a warning.
func (st *stream) viewOf(node *corev3.Node) xds.View {
	cfg := &st.server.cfg
	v := xds.View{Zone: node.GetLocality().GetZone()}
	if key := cfg.NodeNameMetadataKey; key != "" {
		if f, ok := node.GetMetadata().GetFields()[key]; ok {
			if name, isString := f.GetKind().(*structpb.Value_StringValue); isString {
				v.Node = name.StringValue
			} else {
				st.log.Warn("node metadata field for the node name is not a string; serving this stream without its node",
					zap.String("key", key))
			}
		}
	}
	if len(v.Node) > maxViewPart {
		st.log.Warn("node name in node metadata too long; serving this stream without its node", zap.Int("bytes", len(v.Node)))
		v.Node = ""
	}
	if len(v.Zone) > maxViewPart {
		st.log.Warn("node.locality.zone too long; serving this stream without its zone", zap.Int("bytes", len(v.Zone)))
		v.Zone = ""
	}
	if v.Zone == "" && v.Node != "" && cfg.ZoneOfNode != nil {
		// ZoneOfNode reads a cache that is complete only once the store has
		// had its first full sync (deltaeds syncs its Node informer before
		// opening the gate). Nothing is sent before then anyway, so a client
		// that connected early waits here rather than keep an empty zone
		// for its stream's life.
		if !st.waitSynced() {
			return v // the stream is ending; its loop sees why
		}
		if zone := cfg.ZoneOfNode(v.Node); len(zone) <= maxViewPart {
			v.Zone = zone
		}
	}
	return v
}

// waitSynced waits until the store has had its first full sync, and reports
// false if the stream or the server ends first.
func (st *stream) waitSynced() bool {
	select {
	case <-st.server.store.SyncedC():
		return true
	case <-st.grpc.Context().Done():
	case <-st.server.stopped:
	}
	return false
}

// maxIgnoredTypesLogged bounds the distinct ignored type URLs a stream logs
// and remembers: a hostile client could otherwise grow both without end.
const maxIgnoredTypesLogged = 8

// ignore counts a request for a type the store does not serve and logs the
// first of each type on this stream.
func (st *stream) ignore(typeURL string) {
	st.server.metrics.IgnoredTypes.WithLabelValues(ignoredTypeLabel(typeURL)).Inc()
	if st.ignored[typeURL] || len(st.ignored) > maxIgnoredTypesLogged {
		return
	}
	if len(st.ignored) == maxIgnoredTypesLogged {
		st.ignored[""] = true // full: nothing more is remembered or logged
		st.log.Warn("ignoring requests for more type URLs deltaeds does not serve; no longer logging them on this stream",
			zap.Int("types", maxIgnoredTypesLogged))
		return
	}
	st.ignored[typeURL] = true
	st.log.Info("ignoring requests for a type deltaeds does not serve; serve it from another management server or remove it from this ADS source",
		zap.String("type_url", truncate(typeURL, 256)))
}

// envoyTypes are the xDS type URLs an Envoy may ask an ADS source for. Any
// other type URL is counted as "other", so clients cannot create metric
// series at will.
var envoyTypes = map[string]bool{
	"type.googleapis.com/envoy.config.cluster.v3.Cluster":                                     true,
	"type.googleapis.com/envoy.config.listener.v3.Listener":                                   true,
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration":                            true,
	"type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration":                      true,
	"type.googleapis.com/envoy.config.route.v3.VirtualHost":                                   true,
	"type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint":                                 true,
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":                      true,
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret":                    true,
	"type.googleapis.com/envoy.service.runtime.v3.Runtime":                                    true,
	"type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig":                           true,
	"type.googleapis.com/envoy.extensions.filters.network.thrift_proxy.v3.RouteConfiguration": true,
	"type.googleapis.com/envoy.service.health.v3.HealthCheckSpecifier":                        true,
}

func ignoredTypeLabel(typeURL string) string {
	if envoyTypes[typeURL] {
		return typeURL
	}
	return "other"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (st *stream) newTypeState(typeURL string) *typeState {
	m := st.server.metrics
	ts := &typeState{
		url:       typeURL,
		sub:       st.server.store.SubscribeView(typeURL, st.view, st.notify, st.server.cfg.MaxNamesPerStream),
		responses: m.Responses.WithLabelValues(typeURL),
		resources: m.ResourcesSent.WithLabelValues(typeURL),
		removals:  m.RemovalsSent.WithLabelValues(typeURL),
		bytes:     m.BytesSent.WithLabelValues(typeURL),
		acks:      m.ACKs.WithLabelValues(typeURL),
		nacks:     m.NACKs.WithLabelValues(typeURL),
		stale:     m.StaleNonces.WithLabelValues(typeURL),
	}
	st.types[typeURL] = ts
	st.order = append(st.order, ts)
	st.infoMu.Lock()
	st.infoSubs = append(st.infoSubs, ts.sub)
	st.infoMu.Unlock()
	return ts
}

// acknowledge closes the in-flight response of ts with an ACK or a NACK.
func (st *stream) acknowledge(ts *typeState, req *discoveryv3.DeltaDiscoveryRequest) {
	ts.inflight = false
	now := time.Now()
	if detail := req.GetErrorDetail(); detail != nil {
		ts.nacks.Inc()
		ts.inflightObserved = ts.inflightObserved[:0]
		// Envoy applies a response resource by resource and stops at the
		// one it rejects, so the others may or may not have reached it:
		// each is resent alone, once, isolating the bad one.
		resent := ts.sub.Rejected(ts.inflightNames)
		st.server.metrics.NACKResends.Add(float64(resent))
		names := ts.inflightNames
		if len(names) > maxLoggedNames {
			names = names[:maxLoggedNames]
		}
		msg := "client rejected a response (NACK); the rejected resource is not resent until it changes"
		if resent > 0 {
			msg = "client rejected a response (NACK); it may have applied part of it, so each of its resources is resent alone to isolate the rejected one"
		}
		st.log.Warn(msg,
			zap.String("type_url", ts.url), zap.String("nonce", ts.nonce),
			zap.String("error", truncate(detail.GetMessage(), 1024)), zap.Int32("code", detail.GetCode()),
			zap.Int("resources", len(ts.inflightNames)), zap.Int("resent_alone", resent),
			zap.Strings("resource_names", names))
		st.infoMu.Lock()
		st.infoData.LastNACK = now
		st.infoData.LastNACKError = detail.GetMessage()
		st.infoMu.Unlock()
		return
	}
	ts.acks.Inc()
	for _, at := range ts.inflightObserved {
		st.server.metrics.EventToACK.Observe(now.Sub(at).Seconds())
	}
	ts.inflightObserved = ts.inflightObserved[:0]
	st.infoMu.Lock()
	st.infoData.LastACK = now
	st.infoMu.Unlock()
}

// sendPending sends, for every type without a response in flight, what its
// subscription has pending.
func (st *stream) sendPending() error {
	for _, ts := range st.order {
		if ts.inflight {
			continue
		}
		b := ts.sub.Next(st.server.cfg.MaxResponseBytes)
		if b.Empty() {
			continue
		}
		if err := st.send(ts, b); err != nil {
			return err
		}
	}
	return nil
}

func (st *stream) send(ts *typeState, b xds.Batch) error {
	nonce := st.server.nextNonce()
	resp := encodeResponse(b.Resources, b.Removed, ts.url, nonce, batchVersion(b))
	size := resp.size()
	if err := st.grpc.SendMsg(resp); err != nil {
		return fmt.Errorf("send %s response to node %q (is the gRPC server built with delta.Server.GRPCServerOptions?): %w", ts.url, st.nodeID, err)
	}
	now := time.Now()
	ts.nonce = nonce
	ts.inflight = true
	ts.responses.Inc()
	st.infoMu.Lock()
	st.infoData.Responses++
	st.infoMu.Unlock()
	ts.resources.Add(float64(len(b.Resources)))
	ts.removals.Add(float64(len(b.Removed)))
	ts.bytes.Add(float64(size))
	if cap(ts.inflightNames) > 4*maxLoggedNames && len(b.Resources) <= maxLoggedNames {
		ts.inflightNames = nil // an initial sync's worth of names is not kept for ever
	}
	ts.inflightNames = ts.inflightNames[:0]
	for _, r := range b.Resources {
		ts.inflightNames = append(ts.inflightNames, r.Name)
	}
	// Only changes count: a first answer to a subscription is as old as the
	// content, which is not a propagation delay.
	for _, at := range b.Observed {
		st.server.metrics.EventToSend.Observe(now.Sub(at).Seconds())
	}
	ts.inflightObserved = append(ts.inflightObserved, b.Observed...)
	if ce := st.log.Check(zap.DebugLevel, "sent response"); ce != nil {
		ce.Write(zap.String("type_url", ts.url), zap.String("nonce", nonce),
			zap.Int("resources", len(b.Resources)), zap.Int("removed", len(b.Removed)))
	}
	return nil
}

// batchVersion derives system_version_info from the batch content, so equal
// batches carry equal versions on every replica. Envoy uses it only for
// display.
func batchVersion(b xds.Batch) string {
	h := fnv.New64a()
	for _, r := range b.Resources {
		h.Write([]byte(r.Name))
		h.Write([]byte{0})
		h.Write([]byte(r.Version))
		h.Write([]byte{0})
	}
	for _, n := range b.Removed {
		h.Write([]byte{1})
		h.Write([]byte(n))
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// info returns the stream's debug view; subscription counts are read live.
func (st *stream) info() StreamInfo {
	st.infoMu.Lock()
	out := st.infoData
	subs := st.infoSubs
	st.infoMu.Unlock()
	for _, sub := range subs {
		stats := sub.Stats()
		out.Subscriptions += stats.Names
		out.Pending += stats.Pending
		out.Wildcard = out.Wildcard || stats.Wildcard
	}
	return out
}
