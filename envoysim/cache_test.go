package envoysim

import (
	"context"
	"runtime"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestDecodeCacheShares checks that clients of one cache that receive the
// same bytes hold one message, that a client without it holds its own equal
// copy, that a body every client rejects is never cached, and that once no
// client holds a message its entry goes away.
func TestDecodeCacheShares(t *testing.T) {
	dc := new(DecodeCache)
	c1, fs1 := connect(t, Config{NodeID: "n1", DecodeCache: dc}, "a")
	c2, fs2 := connect(t, Config{NodeID: "n2", DecodeCache: dc}, "a")
	solo, fsSolo := connect(t, Config{NodeID: "solo"}, "a")

	v1 := res(t, "a", "v1")
	for _, fs := range []*fakeStream{fs1, fs2, fsSolo} {
		if got := fs.exchange(t, resp("n1", nil, v1)); !proto.Equal(got, ackOf("n1")) {
			t.Fatalf("answer to v1: %v", got)
		}
	}
	func() { // keeps the v1 messages it reads out of the test's frame
		r1, _ := c1.Route("a")
		r2, _ := c2.Route("a")
		h2, _ := c2.Held("a")
		rs, _ := solo.Route("a")
		if r1.CLA == nil || r1.CLA != r2.CLA || h2.CLA != r1.CLA || h2.Resource != proto.Message(r1.CLA) {
			t.Errorf("clients of one cache hold different v1 messages: %p, %p (held %p)", r1.CLA, r2.CLA, h2.CLA)
		}
		if rs.CLA == r1.CLA || !proto.Equal(rs.CLA, r1.CLA) {
			t.Errorf("the client without a cache holds %p (%v), want its own copy of %v", rs.CLA, rs.CLA, r1.CLA)
		}
	}()
	if n := dc.Len(); n != 1 {
		t.Errorf("cache holds %d bodies, want 1", n)
	}

	// A body that fails Validate is rejected by each client on its own.
	bad := cla("a", "host-bad")
	bad.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
	for _, fs := range []*fakeStream{fs1, fs2} {
		if got := fs.exchange(t, resp("bad", nil, &discoveryv3.Resource{Name: "a", Version: "bad", Resource: mustAny(t, bad)})); got.GetErrorDetail() == nil {
			t.Fatalf("answer to an invalid body: %v, want a NACK", got)
		}
	}
	for _, c := range []*Client{c1, c2} {
		if ks := kinds(c.Violations()); len(ks) != 1 || ks[0] != InvalidResource {
			t.Errorf("%s: violations %v, want one invalid resource", c.cfg.NodeID, ks)
		}
	}
	if n := dc.Len(); n != 1 {
		t.Errorf("after a rejected body the cache holds %d bodies, want 1", n)
	}

	// v1 stays while one client still routes with it, and goes once the
	// last one moves on.
	v2 := res(t, "a", "v2")
	fs1.exchange(t, resp("n2", nil, v2))
	waitGC(t, dc, 2)
	fs2.exchange(t, resp("n2", nil, v2))
	r1, _ := c1.Route("a")
	r2, _ := c2.Route("a")
	if r1.Version != "v2" || r1.CLA != r2.CLA {
		t.Errorf("v2: %s at %p and %s at %p, want one shared v2", r1.Version, r1.CLA, r2.Version, r2.CLA)
	}
	waitGC(t, dc, 1)
}

// waitGC collects garbage until the cache holds want bodies.
func waitGC(t *testing.T, dc *DecodeCache, want int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		runtime.GC()
		return dc.Len() == want, nil
	})
	if err != nil {
		t.Fatalf("cache holds %d bodies, want %d: %v", dc.Len(), want, err)
	}
}

// TestDecodeCacheKeysByType checks that the same bytes sent as two types
// decode as each: a cache shared by clients of different types must not
// hand one the other's message.
func TestDecodeCacheKeysByType(t *testing.T) {
	dc := new(DecodeCache)
	str, err := anypb.New(wrapperspb.String(""))
	if err != nil {
		t.Fatal(err)
	}
	st, err := anypb.New(&structpb.Struct{})
	if err != nil {
		t.Fatal(err)
	}
	if len(str.GetValue()) != 0 || len(st.GetValue()) != 0 {
		t.Fatalf("want two empty bodies, got %x and %x", str.GetValue(), st.GetValue())
	}
	a, err := decodeAny(dc, str.GetTypeUrl(), "x", "1", str)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeAny(dc, st.GetTypeUrl(), "x", "1", st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.msg.(*wrapperspb.StringValue); !ok {
		t.Errorf("%s decoded as %T", str.GetTypeUrl(), a.msg)
	}
	if _, ok := b.msg.(*structpb.Struct); !ok {
		t.Errorf("%s decoded as %T", st.GetTypeUrl(), b.msg)
	}
	if n := dc.Len(); n != 2 {
		t.Errorf("cache holds %d bodies, want 2", n)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}
