package xds

import (
	"bytes"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// TestFramedIsTheResponseEncoding checks the hand-framed bytes against what
// protobuf itself produces for a response carrying the resource, for small
// and large resources (lengths crossing varint boundaries).
func TestFramedIsTheResponseEncoding(t *testing.T) {
	for _, n := range []int{0, 1, 50, 127, 128, 300, 20000} {
		c := newCLA("ns/svc/"+strings.Repeat("p", n), 1, n/10)
		r, err := NewResource(c.ClusterName, EndpointType, c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{r.Wire}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Framed, want) || r.WireSize != len(want) {
			t.Fatalf("name length %d: framed bytes differ from protobuf's encoding", n)
		}
		var back discoveryv3.DeltaDiscoveryResponse
		if err := proto.Unmarshal(r.Framed, &back); err != nil || !proto.Equal(back.Resources[0], r.Wire) {
			t.Fatalf("framed bytes do not decode to the resource: %v", err)
		}
	}
}
