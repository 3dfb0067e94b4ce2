package delta

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/xds"
)

// TestEncodedResponseMatchesProto checks the hand-assembled responses
// against the message protobuf would build, through the codec's own
// Marshal as gRPC calls it.
func TestEncodedResponseMatchesProto(t *testing.T) {
	a, err := xds.NewResource("a", EndpointType, cla("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.NewResource("b", EndpointType, cla("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		resources []*xds.Resource
		removed   []string
	}{
		{"empty", nil, nil},
		{"resources", []*xds.Resource{a, b}, nil},
		{"removals", nil, []string{"x", "y"}},
		{"both", []*xds.Resource{b}, []string{"a"}},
	}
	c := newCodec()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := &discoveryv3.DeltaDiscoveryResponse{
				SystemVersionInfo: "sv", TypeUrl: EndpointType, Nonce: "n-1", RemovedResources: tc.removed,
			}
			for _, r := range tc.resources {
				want.Resources = append(want.Resources, r.Wire)
			}
			bufs, err := c.Marshal(encodeResponse(tc.resources, tc.removed, EndpointType, "n-1", "sv"))
			if err != nil {
				t.Fatal(err)
			}
			var got discoveryv3.DeltaDiscoveryResponse
			if err := proto.Unmarshal(bufs.Materialize(), &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, want) {
				t.Fatalf("got %v\nwant %v", &got, want)
			}
		})
	}
	// Other messages go through the proto codec unchanged.
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResourceNamesSubscribe: []string{"a"}}
	bufs, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back discoveryv3.DeltaDiscoveryRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bufs.Materialize())}, &back); err != nil || !proto.Equal(&back, req) {
		t.Fatalf("proto round trip: %v", err)
	}
}
