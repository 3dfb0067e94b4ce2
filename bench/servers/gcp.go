package servers

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// gcpGRPCOptions are the gRPC server options of go-control-plane's example
// server (internal/example/server.go), which its README points users to.
func gcpGRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1000000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	}
}

// gcpServer is the gRPC side shared by the two go-control-plane anchors.
type gcpServer struct {
	cancel context.CancelFunc
	g      *grpc.Server
}

func newGCPServer(ctx context.Context, c cache.Cache, cb server.Callbacks) gcpServer {
	ctx, cancel := context.WithCancel(ctx)
	srv := server.NewServer(ctx, c, cb)
	g := grpc.NewServer(gcpGRPCOptions()...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	return gcpServer{cancel: cancel, g: g}
}

func (s gcpServer) Serve(lis net.Listener) error {
	go func() { _ = s.g.Serve(lis) }()
	return nil
}

func (s gcpServer) Stop(context.Context) error {
	s.cancel() // ends every stream's loop
	s.g.Stop()
	return nil
}

// linear is go-control-plane's LinearCache for EDS with its delta server.
type linear struct {
	gcpServer
	c *cache.LinearCache
}

func newLinear(ctx context.Context) *linear {
	c := cache.NewLinearCache(resource.EndpointType)
	return &linear{gcpServer: newGCPServer(ctx, c, nil), c: c}
}

func (l *linear) Load(clas []*endpointv3.ClusterLoadAssignment) error {
	m := make(map[string]types.Resource, len(clas))
	for _, c := range clas {
		m[c.GetClusterName()] = c
	}
	if err := l.c.UpdateResources(m, nil); err != nil {
		return fmt.Errorf("linear: load: %w", err)
	}
	return nil
}

func (l *linear) Set(c *endpointv3.ClusterLoadAssignment) error {
	if err := l.c.UpdateResources(map[string]types.Resource{c.GetClusterName(): c}, nil); err != nil {
		return fmt.Errorf("linear: update %s: %w", c.GetClusterName(), err)
	}
	return nil
}

// snapshot is go-control-plane's SnapshotCache as Contour used it before
// 1.32: every node holds a snapshot of every CLA, and every change sets a
// new snapshot for every node.
type snapshot struct {
	gcpServer
	c cache.SnapshotCache

	mu      sync.Mutex // guards everything below; held across SetSnapshot
	clas    map[string]types.Resource
	version uint64
	current *cache.Snapshot
	nodes   map[string]struct{}
	known   sync.Map // node id -> struct{}: nodes already given a snapshot
}

func newSnapshot(ctx context.Context) *snapshot {
	s := &snapshot{
		c:     cache.NewSnapshotCache(true, cache.IDHash{}, nil),
		clas:  make(map[string]types.Resource),
		nodes: make(map[string]struct{}),
	}
	cb := server.CallbackFuncs{StreamDeltaRequestFunc: s.onRequest}
	s.gcpServer = newGCPServer(ctx, s.c, cb)
	return s
}

// onRequest gives a node seen for the first time the current snapshot,
// before the server creates its first watch.
func (s *snapshot) onRequest(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	id := req.GetNode().GetId()
	if id == "" {
		return nil
	}
	if _, ok := s.known.Load(id); ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[id]; ok {
		return nil
	}
	s.nodes[id] = struct{}{}
	s.known.Store(id, struct{}{})
	if s.current == nil {
		return nil
	}
	if err := s.c.SetSnapshot(context.Background(), id, s.current); err != nil {
		return fmt.Errorf("snapshot: set snapshot for new node %s: %w", id, err)
	}
	return nil
}

// publishLocked builds a snapshot of every CLA and sets it for every node.
func (s *snapshot) publishLocked() error {
	s.version++
	list := make([]types.Resource, 0, len(s.clas))
	for _, r := range s.clas {
		list = append(list, r)
	}
	snap, err := cache.NewSnapshot(strconv.FormatUint(s.version, 10), map[resource.Type][]types.Resource{resource.EndpointType: list})
	if err != nil {
		return fmt.Errorf("snapshot: new snapshot: %w", err)
	}
	s.current = snap
	for node := range s.nodes {
		if err := s.c.SetSnapshot(context.Background(), node, snap); err != nil {
			return fmt.Errorf("snapshot: set snapshot for %s: %w", node, err)
		}
	}
	return nil
}

func (s *snapshot) Load(clas []*endpointv3.ClusterLoadAssignment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range clas {
		s.clas[c.GetClusterName()] = c
	}
	return s.publishLocked()
}

func (s *snapshot) Set(c *endpointv3.ClusterLoadAssignment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clas[c.GetClusterName()] = c
	return s.publishLocked()
}
