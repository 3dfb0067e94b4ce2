package delta

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/deltaeds/deltaeds/xds"
)

// scriptedStream is an in-process stream that feeds the server a fixed
// sequence of requests and checks every response it is sent.
type scriptedStream struct {
	grpc.ServerStream
	t     *testing.T
	ctx   context.Context
	store *xds.Store
	ops   []byte

	mu    sync.Mutex // guards nonce: Send runs on the handler, Recv on the receiver
	nonce string     // latest response nonce seen
	seen  map[string]bool
}

func (s *scriptedStream) latestNonce() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nonce
}

var fuzzNames = []string{"a", "b", "c", "*", "", "missing"}

var fuzzTypes = []string{EndpointType, EndpointType, "", "type.googleapis.com/envoy.config.cluster.v3.Cluster", "garbage"}

func (s *scriptedStream) Context() context.Context { return s.ctx }

func (s *scriptedStream) take() (byte, bool) {
	if len(s.ops) == 0 {
		return 0, false
	}
	b := s.ops[0]
	s.ops = s.ops[1:]
	return b, true
}

// Recv decodes the next request from the fuzz bytes. Some bytes change the
// store instead, so updates interleave with requests.
func (s *scriptedStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	for {
		op, ok := s.take()
		if !ok {
			return nil, io.EOF
		}
		arg, _ := s.take()
		switch op % 8 {
		case 0:
			name := fuzzNames[int(arg)%len(fuzzNames)]
			_, _ = s.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: name, Message: cla(name, uint32(arg))}})
			continue
		case 1:
			_, _ = s.store.Apply(EndpointType, []xds.ResourceUpdate{{Name: fuzzNames[int(arg)%len(fuzzNames)]}})
			continue
		case 2:
			s.store.MarkSynced()
			continue
		}
		r := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: fuzzTypes[int(op>>3)%len(fuzzTypes)]}
		if arg&1 != 0 {
			r.Node = &corev3.Node{Id: "fuzz"}
		}
		for i := 1; i < 7; i++ {
			if arg&(1<<i) == 0 {
				continue
			}
			n := fuzzNames[i%len(fuzzNames)]
			switch {
			case op&0x40 != 0:
				r.ResourceNamesUnsubscribe = append(r.ResourceNamesUnsubscribe, n)
			case op&0x80 != 0 && i%2 == 0:
				if r.InitialResourceVersions == nil {
					r.InitialResourceVersions = map[string]string{}
				}
				r.InitialResourceVersions[n] = string(rune('0' + i))
			default:
				r.ResourceNamesSubscribe = append(r.ResourceNamesSubscribe, n)
			}
		}
		switch op % 8 {
		case 3, 4:
			r.ResponseNonce = s.latestNonce()
		case 5:
			r.ResponseNonce = s.latestNonce()
			r.ErrorDetail = &statuspb.Status{Message: "fuzz"}
		case 6:
			r.ResponseNonce = "bogus"
		}
		return r, nil
	}
}

func (s *scriptedStream) Send(resp *discoveryv3.DeltaDiscoveryResponse) error {
	if resp.Nonce == "" || s.seen[resp.Nonce] {
		s.t.Errorf("response nonce %q empty or reused", resp.Nonce)
	}
	s.seen[resp.Nonce] = true
	s.mu.Lock()
	s.nonce = resp.Nonce
	s.mu.Unlock()
	names := map[string]bool{}
	for _, r := range resp.Resources {
		if r.Version == "" || names[r.Name] {
			s.t.Errorf("resource %q without version or named twice", r.Name)
		}
		names[r.Name] = true
	}
	for _, n := range resp.RemovedResources {
		if names[n] {
			s.t.Errorf("%q both sent and removed", n)
		}
		names[n] = true
	}
	return nil
}

// SendMsg receives what the server writes: its pre-encoded responses,
// decoded here exactly as a client would.
func (s *scriptedStream) SendMsg(m any) error {
	e, ok := m.(*encodedResponse)
	if !ok {
		s.t.Fatalf("server sent a %T", m)
	}
	resp, err := e.decode()
	if err != nil {
		s.t.Fatalf("undecodable response: %v", err)
	}
	return s.Send(resp)
}

func (s *scriptedStream) SetHeader(metadata.MD) error  { return nil }
func (s *scriptedStream) SendHeader(metadata.MD) error { return nil }
func (s *scriptedStream) SetTrailer(metadata.MD)       {}

// FuzzStream feeds arbitrary request sequences, interleaved with store
// updates, into one stream: the server must never panic, must end the stream
// when the requests end, and must keep every response well formed.
func FuzzStream(f *testing.F) {
	f.Add([]byte{2, 0, 3, 0x03})
	f.Add([]byte{2, 0, 0, 1, 3, 0x0b, 4, 0x01, 1, 1, 5, 0x01})
	f.Add([]byte{0, 2, 2, 0, 0x83, 0x55, 4, 0, 0x43, 0x7f, 6, 0})
	f.Add([]byte{3, 0x02})
	f.Add([]byte{0x0b, 0x01, 0x13, 0x01, 2, 0, 0x1b, 0x03})
	f.Fuzz(func(t *testing.T, ops []byte) {
		store := xds.NewStore()
		store.RegisterType(EndpointType, emptyCLA)
		srv := NewServer(store, Config{MaxNamesPerStream: 4, MaxResponseBytes: 64})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := &scriptedStream{t: t, ctx: ctx, store: store, ops: ops, seen: map[string]bool{}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.serve(st, "")
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("stream did not end after its last request")
		}
	})
}
