package delta

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/xds"
)

// encodedResponse is a DeltaDiscoveryResponse already in wire form: the
// shared, pre-encoded entries of its resources followed by its own small
// fields. The codec writes the pieces as they are, so a resource sent to a
// thousand streams is never copied or marshaled per stream.
type encodedResponse struct {
	resources [][]byte // xds.Resource.Framed of each resource, shared
	tail      []byte   // system_version_info, type_url, nonce, removed_resources
}

// Field numbers of envoy.service.discovery.v3.DeltaDiscoveryResponse.
const (
	fieldSystemVersionInfo = 1
	fieldTypeURL           = 4
	fieldNonce             = 5
	fieldRemovedResources  = 6
)

func encodeResponse(resources []*xds.Resource, removed []string, typeURL, nonce, systemVersion string) *encodedResponse {
	e := &encodedResponse{resources: make([][]byte, len(resources))}
	for i, r := range resources {
		e.resources[i] = r.Framed
	}
	size := protowire.SizeTag(fieldSystemVersionInfo) + protowire.SizeBytes(len(systemVersion)) +
		protowire.SizeTag(fieldTypeURL) + protowire.SizeBytes(len(typeURL)) +
		protowire.SizeTag(fieldNonce) + protowire.SizeBytes(len(nonce))
	for _, n := range removed {
		size += protowire.SizeTag(fieldRemovedResources) + protowire.SizeBytes(len(n))
	}
	tail := make([]byte, 0, size)
	tail = protowire.AppendTag(tail, fieldSystemVersionInfo, protowire.BytesType)
	tail = protowire.AppendString(tail, systemVersion)
	tail = protowire.AppendTag(tail, fieldTypeURL, protowire.BytesType)
	tail = protowire.AppendString(tail, typeURL)
	tail = protowire.AppendTag(tail, fieldNonce, protowire.BytesType)
	tail = protowire.AppendString(tail, nonce)
	for _, n := range removed {
		tail = protowire.AppendTag(tail, fieldRemovedResources, protowire.BytesType)
		tail = protowire.AppendString(tail, n)
	}
	e.tail = tail
	return e
}

// size is the response's encoded length.
func (e *encodedResponse) size() int {
	n := len(e.tail)
	for _, r := range e.resources {
		n += len(r)
	}
	return n
}

// decode parses the response back; tests and fuzzing use it.
func (e *encodedResponse) decode() (*discoveryv3.DeltaDiscoveryResponse, error) {
	b := make([]byte, 0, e.size())
	for _, r := range e.resources {
		b = append(b, r...)
	}
	b = append(b, e.tail...)
	var resp discoveryv3.DeltaDiscoveryResponse
	if err := gproto.Unmarshal(b, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// codec writes encodedResponses as they are and hands every other message
// to gRPC's proto codec. GRPCServerOptions installs it.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	e, ok := v.(*encodedResponse)
	if !ok {
		return c.proto.Marshal(v)
	}
	out := make(mem.BufferSlice, 0, len(e.resources)+1)
	for _, r := range e.resources {
		// SliceBuffer's Free is a no-op: the shared bytes are never
		// recycled into gRPC's pools.
		out = append(out, mem.SliceBuffer(r))
	}
	return append(out, mem.SliceBuffer(e.tail)), nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*encodedResponse); ok {
		return fmt.Errorf("delta codec: an encoded response is never received")
	}
	return c.proto.Unmarshal(data, v)
}

func (c codec) Name() string { return proto.Name }
