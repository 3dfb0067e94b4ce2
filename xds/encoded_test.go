package xds

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// A resource built from pre-encoded pieces is the resource NewResource
// builds from the message: same version, same framed bytes; and Apply
// stores it as such.
func TestNewEncodedResourceMatchesNewResource(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "ns/svc/http", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Zone: "a"}, Priority: 1},
	}}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cla)
	if err != nil {
		t.Fatal(err)
	}
	want, err := NewResource(cla.ClusterName, claType, cla)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 1, len(b) / 2, len(b)} {
		got, err := NewEncodedResource(cla.ClusterName, claType, [][]byte{b[:cut], nil, b[cut:]})
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != want.Version || !bytes.Equal(got.Framed, want.Framed) || !bytes.Equal(got.Wire.Resource.Value, b) {
			t.Fatalf("cut %d: version %s framed %d bytes, want %s and %d bytes", cut, got.Version, len(got.Framed), want.Version, len(want.Framed))
		}
	}
	if _, err := NewEncodedResource("x", claType, nil); err == nil {
		t.Fatal("no pieces: no error")
	}

	s := NewStore()
	if _, err := s.Apply(claType, []ResourceUpdate{{Name: cla.ClusterName, Message: cla, Encoded: [][]byte{b[:3], b[3:]}}}); err != nil {
		t.Fatal(err)
	}
	if got := s.Get(claType, cla.ClusterName); got.Version != want.Version || !bytes.Equal(got.Framed, want.Framed) {
		t.Fatalf("stored version %s, want %s", got.Version, want.Version)
	}
	ch, err := s.Apply(claType, []ResourceUpdate{{Name: cla.ClusterName, Message: cla}})
	if err != nil || ch.Unchanged != 1 {
		t.Fatalf("the same content marshaled: %+v, %v; want unchanged", ch, err)
	}
}
