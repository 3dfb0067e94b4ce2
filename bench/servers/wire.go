package servers

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Field numbers of envoy.service.discovery.v3.DeltaDiscoveryResponse.
const (
	fieldResources protowire.Number = 2
	fieldTypeURL   protowire.Number = 4
	fieldNonce     protowire.Number = 5
)

// wireMaxResponseBytes splits initial responses like deltaeds' default.
const wireMaxResponseBytes = 1 << 20

// wire is the floor: it marshals each CLA once per change and writes the
// same bytes to every subscribed stream. It keeps no per-stream state but
// the names a stream subscribed to and a queue of frames to write.
type wire struct {
	g *grpc.Server

	mu       sync.RWMutex // guards everything below
	frags    map[string]wireFrag
	byName   map[string]map[*wireStream]struct{}
	wildcard map[*wireStream]struct{}
	seq      uint64
}

// wireFrag is one resource, ready to be appended to a response: the
// resources field tag, length and the marshaled discovery Resource.
type wireFrag struct {
	version string
	bytes   []byte
}

// rawFrame is a response already in wire format.
type rawFrame struct{ b []byte }

// rawCodec writes rawFrames as they are and leaves everything else to the
// standard proto codec.
type rawCodec struct{ proto encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*rawFrame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }
func (c rawCodec) Name() string                                { return proto.Name }

func newWire() *wire {
	w := &wire{
		frags:    make(map[string]wireFrag),
		byName:   make(map[string]map[*wireStream]struct{}),
		wildcard: make(map[*wireStream]struct{}),
	}
	w.g = grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{proto: encoding.GetCodecV2(proto.Name)}))
	w.g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "envoy.service.discovery.v3.AggregatedDiscoveryService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "DeltaAggregatedResources",
			Handler:       func(_ any, ss grpc.ServerStream) error { return w.serve(ss) },
			ServerStreams: true,
			ClientStreams: true,
		}},
	}, nil)
	return w
}

func makeFrag(c *endpointv3.ClusterLoadAssignment) (string, wireFrag, error) {
	b, err := protobuf.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", wireFrag{}, fmt.Errorf("wire: marshal %s: %w", c.GetClusterName(), err)
	}
	var sum [8]byte
	h := xxhash.Sum64(b)
	for i := range sum {
		sum[i] = byte(h >> (8 * i))
	}
	version := hex.EncodeToString(sum[:])
	r, err := protobuf.Marshal(&discoveryv3.Resource{
		Name: c.GetClusterName(), Version: version,
		Resource: &anypb.Any{TypeUrl: resource.EndpointType, Value: b},
	})
	if err != nil {
		return "", wireFrag{}, fmt.Errorf("wire: marshal resource %s: %w", c.GetClusterName(), err)
	}
	f := protowire.AppendTag(make([]byte, 0, len(r)+8), fieldResources, protowire.BytesType)
	f = protowire.AppendBytes(f, r)
	return c.GetClusterName(), wireFrag{version: version, bytes: f}, nil
}

func appendTrailer(b []byte, nonce string) []byte {
	b = protowire.AppendTag(b, fieldTypeURL, protowire.BytesType)
	b = protowire.AppendString(b, resource.EndpointType)
	b = protowire.AppendTag(b, fieldNonce, protowire.BytesType)
	return protowire.AppendString(b, nonce)
}

func (w *wire) Load(clas []*endpointv3.ClusterLoadAssignment) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range clas {
		name, f, err := makeFrag(c)
		if err != nil {
			return err
		}
		w.frags[name] = f
	}
	return nil
}

// Set marshals the change once and queues the same bytes on every stream
// that wants the name.
func (w *wire) Set(c *endpointv3.ClusterLoadAssignment) error {
	name, f, err := makeFrag(c)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.frags[name] = f
	w.seq++
	b := appendTrailer(append(make([]byte, 0, len(f.bytes)+80), f.bytes...), "c"+strconv.FormatUint(w.seq, 10))
	for st := range w.byName[name] {
		if !st.wild { // a wildcard stream gets it below, once
			st.push(b)
		}
	}
	for st := range w.wildcard {
		st.push(b)
	}
	return nil
}

func (w *wire) Serve(lis net.Listener) error {
	go func() { _ = w.g.Serve(lis) }()
	return nil
}

func (w *wire) Stop(context.Context) error {
	w.g.Stop()
	return nil
}

// wireStream is one stream's queue of frames; its writer goroutine is the
// only caller of SendMsg.
type wireStream struct {
	mu     sync.Mutex
	queue  [][]byte
	wake   chan struct{}
	names  map[string]struct{} // owned by the stream's handler goroutine
	wild   bool                // owned by the stream's handler goroutine
	nonces uint64              // owned by the stream's handler goroutine
}

func (st *wireStream) push(b []byte) {
	st.mu.Lock()
	st.queue = append(st.queue, b)
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *wireStream) writeLoop(ctx context.Context, ss grpc.ServerStream) error {
	for {
		st.mu.Lock()
		q := st.queue
		st.queue = nil
		st.mu.Unlock()
		for _, b := range q {
			if err := ss.SendMsg(&rawFrame{b: b}); err != nil {
				return fmt.Errorf("wire: send: %w", err)
			}
		}
		select {
		case <-st.wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func (w *wire) serve(ss grpc.ServerStream) error {
	st := &wireStream{wake: make(chan struct{}, 1), names: make(map[string]struct{})}
	ctx, cancel := context.WithCancel(ss.Context())
	writerErr := make(chan error, 1)
	go func() {
		err := st.writeLoop(ctx, ss)
		cancel()
		writerErr <- err
	}()
	defer func() {
		cancel()
		<-writerErr
		w.mu.Lock()
		for n := range st.names {
			if set := w.byName[n]; set != nil {
				delete(set, st)
				if len(set) == 0 {
					delete(w.byName, n)
				}
			}
		}
		delete(w.wildcard, st)
		w.mu.Unlock()
	}()

	first := true
	for {
		req := new(discoveryv3.DeltaDiscoveryRequest)
		if err := ss.RecvMsg(req); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := w.handle(st, req, first); err != nil {
			return err
		}
		first = false
	}
}

// handle applies one request's subscription changes and queues what a newly
// subscribed name needs, skipping versions the client says it holds.
func (w *wire) handle(st *wireStream, req *discoveryv3.DeltaDiscoveryRequest, first bool) error {
	if tu := req.GetTypeUrl(); tu != resource.EndpointType {
		return fmt.Errorf("wire: serves only %s, got %q", resource.EndpointType, tu)
	}
	subscribe := req.GetResourceNamesSubscribe()
	if first && len(subscribe) == 0 {
		subscribe = []string{"*"}
	}
	if len(subscribe) == 0 && len(req.GetResourceNamesUnsubscribe()) == 0 {
		return nil // an ACK or NACK: nothing to keep
	}
	held := req.GetInitialResourceVersions()

	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wild = false
			delete(w.wildcard, st)
			continue
		}
		delete(st.names, n)
		if set := w.byName[n]; set != nil {
			delete(set, st)
		}
	}
	var send []wireFrag
	for _, n := range subscribe {
		if n == "*" {
			if !st.wild {
				st.wild = true
				w.wildcard[st] = struct{}{}
				for name, f := range w.frags {
					if held[name] != f.version {
						send = append(send, f)
					}
				}
			}
			continue
		}
		if _, ok := st.names[n]; ok {
			continue
		}
		st.names[n] = struct{}{}
		set := w.byName[n]
		if set == nil {
			set = make(map[*wireStream]struct{})
			w.byName[n] = set
		}
		set[st] = struct{}{}
		if f, ok := w.frags[n]; ok && held[n] != f.version && !st.wild {
			send = append(send, f)
		}
	}
	// Queued under w.mu, so no later change can overtake it.
	for len(send) > 0 {
		size, i := 0, 0
		for i < len(send) && (i == 0 || size+len(send[i].bytes) <= wireMaxResponseBytes) {
			size += len(send[i].bytes)
			i++
		}
		b := make([]byte, 0, size+80)
		for _, f := range send[:i] {
			b = append(b, f.bytes...)
		}
		st.nonces++
		st.push(appendTrailer(b, "s"+strconv.FormatUint(st.nonces, 10)))
		send = send[i:]
	}
	return nil
}
