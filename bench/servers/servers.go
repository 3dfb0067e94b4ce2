package servers

import (
	"context"
	"fmt"
	"net"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/deltaeds/deltaeds/bench/control"
)

// Server is one Delta ADS server under test.
type Server interface {
	// Load stores the initial state in one batch, before Serve.
	Load(clas []*endpointv3.ClusterLoadAssignment) error
	// Set applies one change through the server's own update API.
	Set(cla *endpointv3.ClusterLoadAssignment) error
	// Serve serves Delta ADS on lis; it returns once the server has started.
	Serve(lis net.Listener) error
	// Stop ends every stream and the gRPC server.
	Stop(ctx context.Context) error
}

// New returns a server of the given kind (one of control.Kinds).
func New(ctx context.Context, kind string) (Server, error) { return NewZoned(ctx, kind, 0) }

// NewZoned returns a server of the given kind that, with zones > 0, serves
// each zone its variant of every CLA; only deltaeds can.
func NewZoned(ctx context.Context, kind string, zones int) (Server, error) {
	if zones > 0 && kind != control.KindDeltaEDS {
		return nil, fmt.Errorf("server kind %q cannot serve per-zone variants", kind)
	}
	switch kind {
	case control.KindDeltaEDS:
		return newDeltaEDS(zones), nil
	case control.KindLinear:
		return newLinear(ctx), nil
	case control.KindSnapshot:
		return newSnapshot(ctx), nil
	case control.KindWire:
		return newWire(), nil
	}
	return nil, fmt.Errorf("unknown server kind %q (want one of %v)", kind, control.Kinds)
}
