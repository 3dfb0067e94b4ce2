package envoysim

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"
)

// TestRequestsCoalesce drives the request builder directly, without a
// writer, so that what is merged into one request is deterministic.
func TestRequestsCoalesce(t *testing.T) {
	c := New(Config{NodeID: "n"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newStream(1, ctx, cancel)
	c.st = st
	next := func() (*discoveryv3.DeltaDiscoveryRequest, reqKind) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.nextRequestLocked(st)
	}
	req := func(sub, unsub []string) *discoveryv3.DeltaDiscoveryRequest {
		return &discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:                  TypeURLClusterLoadAssignment,
			ResourceNamesSubscribe:   sub,
			ResourceNamesUnsubscribe: unsub,
		}
	}
	steps := []struct {
		name     string
		do       func()
		want     *discoveryv3.DeltaDiscoveryRequest
		wantKind reqKind
	}{{
		name: "nothing wanted: no first request",
		do:   func() {},
	}, {
		name: "first request carries everything wanted",
		do:   func() { c.Subscribe("b"); c.Subscribe("a") },
		want: func() *discoveryv3.DeltaDiscoveryRequest {
			r := req([]string{"a", "b"}, nil)
			r.Node = c.node()
			return r
		}(),
	}, {
		name: "a name never told needs no unsubscribe",
		do:   func() { c.Subscribe("d"); c.Unsubscribe("d") },
	}, {
		name: "resubscribing a told name sends it again",
		do:   func() { c.Unsubscribe("a"); c.Subscribe("a") },
		want: req([]string{"a"}, nil),
	}, {
		name: "changes merge",
		do:   func() { c.Unsubscribe("b"); c.Subscribe("c", "e") },
		want: req([]string{"c", "e"}, []string{"b"}),
	}, {
		name: "changes ride on the first queued ACK",
		do: func() {
			c.mu.Lock()
			st.acks = append(st.acks, ack{nonce: "n1"}, ack{nonce: "n2", reason: "bad"})
			c.mu.Unlock()
			c.Subscribe("f")
		},
		want: func() *discoveryv3.DeltaDiscoveryRequest {
			r := req([]string{"f"}, nil)
			r.ResponseNonce = "n1"
			return r
		}(),
		wantKind: reqACK,
	}, {
		name: "NACKs follow in order",
		do:   func() {},
		want: &discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:       TypeURLClusterLoadAssignment,
			ResponseNonce: "n2",
			ErrorDetail:   &status.Status{Code: int32(codes.Internal), Message: "bad"},
		},
		wantKind: reqNACK,
	}, {
		name: "then nothing",
		do:   func() {},
	}}
	for _, s := range steps {
		s.do()
		got, kind := next()
		if !proto.Equal(got, s.want) || kind != s.wantKind {
			t.Fatalf("%s: got %v (kind %d), want %v (kind %d)", s.name, got, kind, s.want, s.wantKind)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range []string{"a", "c", "e", "f"} {
		if !st.knowsLocked(n) {
			t.Errorf("%q not known to the server after being sent", n)
		}
	}
	if !st.knowsLocked("b") {
		t.Error("b, unsubscribed on this stream, should still be tolerated")
	}
	if st.knowsLocked("d") {
		t.Error("d was never sent but is considered known")
	}
}

// TestRequestCodec: a request larger than grpc's pooling threshold is
// encoded into a buffer of its own size, with the bytes proto.Marshal gives,
// and responses still decode through grpc's codec.
func TestRequestCodec(t *testing.T) {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}
	for i := range 2000 {
		req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, fmt.Sprintf("default/service-%05d", i))
	}
	want, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) <= 32<<10 {
		t.Fatalf("request is %d B; the test needs one above grpc's 32 KB tier", len(want))
	}
	codec := requestCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
	data, err := codec.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 1 || data[0].Len() != len(want) || cap(data[0].ReadOnlyData()) != len(want) {
		t.Fatalf("encoded into %d buffers, first %d B of capacity %d; want one of %d", len(data), data[0].Len(), cap(data[0].ReadOnlyData()), len(want))
	}
	if !bytes.Equal(data.Materialize(), want) {
		t.Fatal("encoded bytes differ from proto.Marshal's")
	}
	var back discoveryv3.DeltaDiscoveryRequest
	if err := codec.Unmarshal(data, &back); err != nil || !proto.Equal(&back, req) {
		t.Fatalf("decode: err %v, equal %v", err, proto.Equal(&back, req))
	}
	if codec.Name() != grpcproto.Name {
		t.Fatalf("codec name %q, want %q (the content subtype must not change)", codec.Name(), grpcproto.Name)
	}
}
