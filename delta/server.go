package delta

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"

	"github.com/deltaeds/deltaeds/xds"
)

// sotwMessage is returned by every state-of-the-world method.
const sotwMessage = "deltaeds serves only incremental xDS: set api_type: DELTA_GRPC in the ads_config (or eds_config api_config_source) of Envoy's bootstrap"

// Defaults for Config fields left zero.
const (
	DefaultMaxResponseBytes  = 1 << 20
	DefaultMaxRequestBytes   = 4 << 20
	DefaultMaxNamesPerStream = 100_000
)

// Config configures a Server.
type Config struct {
	Logger *zap.Logger
	// Metrics receive the server's counters; nil creates unregistered ones.
	Metrics *Metrics
	// MaxResponseBytes bounds the resource bytes of one response; larger
	// batches are split. One resource is always sent, whatever its size.
	MaxResponseBytes int
	// MaxRequestBytes bounds one request; see GRPCServerOptions.
	MaxRequestBytes int
	// MaxNamesPerStream bounds the names one stream may subscribe to, per
	// type; exceeding it ends the stream with ResourceExhausted.
	MaxNamesPerStream int
	// AckTimeout ends a stream, with DeadlineExceeded, once a response of
	// any type has waited longer than this for its ACK or NACK (a request
	// carrying its nonce). The client reconnects. 0, the default, means
	// responses may wait for ever. A stream blocked writing a response (a
	// client that does not read) is not ended by it; the gRPC server's
	// MaxConnectionAge bounds that one.
	AckTimeout time.Duration

	// NodeNameMetadataKey names the field of the first request's
	// node.metadata whose string value is the client's Kubernetes node name,
	// the Node of its view (see [xds.View]); "" (the default) reads none.
	// deltaeds' bootstrap and deploy/ use [DefaultNodeNameMetadataKey].
	NodeNameMetadataKey string
	// ZoneOfNode, when not nil, gives the zone of a node name: it fills the
	// view's Zone for a client that tells its node name but not its zone
	// (node.locality.zone). It is called on the stream's goroutine when its
	// first request arrives, or when the store has its first full sync if
	// that comes later (the cache it reads is complete by then), so it must
	// answer from memory (an informer's cache) and be safe for concurrent
	// use; "" means unknown.
	ZoneOfNode func(node string) string
}

// DefaultNodeNameMetadataKey is the node metadata key deltaeds' own
// bootstrap and deploy/ set to the Envoy's Kubernetes node name.
const DefaultNodeNameMetadataKey = "deltaeds.io/node-name"

// maxViewPart bounds the zone and node name a stream's view takes from its
// client (Kubernetes names and label values are at most 253 bytes): a longer
// one is ignored, with a warning, rather than kept as a store key.
const maxViewPart = 253

// Server serves the Delta xDS protocol from an xds.Store.
type Server struct {
	store   *xds.Store
	log     *zap.Logger
	metrics *Metrics
	cfg     Config

	noncePrefix string
	nonceSeq    atomic.Uint64

	stopOnce sync.Once
	stopped  chan struct{}

	mu      sync.Mutex // guards streams, joining wg, and closing stopped
	streams map[*stream]struct{}
	wg      sync.WaitGroup // running stream handlers
}

// NewServer returns a server for store.
func NewServer(store *xds.Store, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxNamesPerStream <= 0 {
		cfg.MaxNamesPerStream = DefaultMaxNamesPerStream
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Server{
		store:       store,
		log:         cfg.Logger,
		metrics:     cfg.Metrics,
		cfg:         cfg,
		noncePrefix: hex.EncodeToString(b[:]) + "-",
		stopped:     make(chan struct{}),
		streams:     make(map[*stream]struct{}),
	}
}

// GRPCServerOptions returns the grpc.Server options the server needs: the
// codec that writes pre-encoded responses without copying them per stream,
// and the request size limit (a larger request ends its stream with
// ResourceExhausted). Pass them to grpc.NewServer.
func (s *Server) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newCodec()),
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
	}
}

// Register registers the ADS and EDS services on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, adsService{server: s})
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, edsService{server: s})
}

// Stop ends every stream with codes.Unavailable and waits for their handlers
// to return, or for ctx to end. New streams are refused. Call it before
// grpc.Server.GracefulStop, which otherwise waits for streams forever.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopOnce.Do(func() { close(s.stopped) })
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StreamInfo describes one connected stream, for debugging.
type StreamInfo struct {
	NodeID string `json:"node_id"`
	// View is where the client runs (its zone and Kubernetes node), as read
	// from its first request; it picks the variants it is served.
	View          xds.View  `json:"view,omitzero"`
	Peer          string    `json:"peer"`
	ConnectedAt   time.Time `json:"connected_at"`
	Subscriptions int       `json:"subscriptions"`
	Wildcard      bool      `json:"wildcard"`
	Pending       int       `json:"pending"`
	Responses     uint64    `json:"responses"`
	LastACK       time.Time `json:"last_ack,omitzero"`
	LastNACK      time.Time `json:"last_nack,omitzero"`
	LastNACKError string    `json:"last_nack_error,omitempty"`
}

// Streams returns every connected stream, sorted by node id then peer.
func (s *Server) Streams() []StreamInfo {
	s.mu.Lock()
	list := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		list = append(list, st)
	}
	s.mu.Unlock()
	out := make([]StreamInfo, 0, len(list))
	for _, st := range list {
		out = append(out, st.info())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeID != out[j].NodeID {
			return out[i].NodeID < out[j].NodeID
		}
		return out[i].Peer < out[j].Peer
	})
	return out
}

func (s *Server) nextNonce() string {
	return s.noncePrefix + itoa36(s.nonceSeq.Add(1))
}

func itoa36(v uint64) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [16]byte
	i := len(b)
	for {
		i--
		b[i] = digits[v%36]
		v /= 36
		if v == 0 {
			return string(b[i:])
		}
	}
}

type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	server *Server
}

func (a adsService) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return a.server.serve(st, "")
}

func (a adsService) StreamAggregatedResources(grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return status.Error(codes.Unimplemented, sotwMessage)
}

type edsService struct {
	endpointservice.UnimplementedEndpointDiscoveryServiceServer
	server *Server
}

func (e edsService) DeltaEndpoints(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return e.server.serve(st, xds.EndpointType)
}

func (e edsService) StreamEndpoints(grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return status.Error(codes.Unimplemented, sotwMessage)
}

func (e edsService) FetchEndpoints(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, status.Error(codes.Unimplemented, sotwMessage)
}
