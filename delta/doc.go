// Package delta owns deltaeds' gRPC face: the incremental (Delta) xDS
// protocol, served on AggregatedDiscoveryService.DeltaAggregatedResources and
// EndpointDiscoveryService.DeltaEndpoints with the same logic.
//
// # What a stream does
//
// Each stream is served by two goroutines. The receiver (started by the
// handler) only reads requests and hands them over; the handler goroutine owns
// every piece of protocol state of the stream (nonces, what is in flight,
// which types are subscribed) and is the only one that writes to the stream.
// Nothing else is shared with other streams except the xds.Store, whose
// updates reach a stream through a notify channel of capacity one, so a store
// update never waits on a stream and a slow stream never delays another.
//
// For each type there is at most one unacknowledged response in flight.
// Changes arriving meanwhile accumulate in the subscription's pending set and
// go out together when the client ACKs or NACKs: batching is paced by the
// client, with no timer. A response stays under Config.MaxResponseBytes;
// larger batches are split over several responses.
//
// Every response carries a fresh nonce. A request whose response_nonce names
// the latest response of its type is its ACK, or its NACK when error_detail
// is set; any other nonce is stale and acknowledges nothing, though its
// subscription changes still apply. A NACKed version is not resent in a loop:
// the next change of the resource is.
//
// # Views
//
// A stream's view ([xds.View]: where its client runs) is read once, from its
// first request's node, like the node id: the zone from node.locality.zone
// (Envoy's --service-zone), the Kubernetes node name from the string
// node.metadata field Config.NodeNameMetadataKey names (none when ""), and,
// when only the node name is told, the zone from Config.ZoneOfNode, asked
// only once the store has had its first full sync (a stream that starts
// earlier waits for it: nothing is sent before then anyway). It is
// fixed for the stream's life: the node of later requests is ignored, as it
// is for the node id (Envoy sends it on the first request only); a client
// that moves reconnects. Each subscription of the stream is opened at that
// view, so it is served the variants its view's keys name (topology-aware
// CLAs) and the plain resources otherwise. Server.Streams shows each view.
//
// # Missing names
//
// The first time a stream subscribes by name to a name that has no resource
// (checked once the store is synced), it logs the name with the published
// names closest to it (xds.Store.Suggest), once per stream, type and name and
// at most maxMissingLogged names per stream. Server.Missing lists the missing
// names with the node ids of the streams asking for them.
//
// # Using this package
//
// A [Server] serves one xds.Store, fed and marked synced by its writer as
// package xds says. [Example] runs the whole life of one. The caller's duties:
//
//  1. Build it with [NewServer] and a [Config]. Give Config.Metrics
//     [NewMetrics] of the registry /metrics serves, or its counters go
//     nowhere; zero limits take the Default values. For topology-aware
//     endpoints set Config.NodeNameMetadataKey (deltaeds:
//     [DefaultNodeNameMetadataKey]) and, to find the zone of a client that
//     tells only its node, Config.ZoneOfNode (deltaeds: a lookup in the Node
//     informer's cache).
//  2. Create the grpc.Server with [Server.GRPCServerOptions] first, then the
//     caller's own (TLS, keepalive, stream limits): the options carry the codec
//     that writes the pre-encoded responses, without which no response can be
//     sent, and the request size limit.
//  3. [Server.Register] the ADS and EDS services on it, then Serve.
//  4. To shut down, call [Server.Stop] before grpc.Server.GracefulStop: Stop
//     ends every stream with codes.Unavailable (clients reconnect elsewhere)
//     and refuses new ones; GracefulStop alone would wait for the streams,
//     which never end on their own, for ever. Bound Stop's wait with its
//     context, and fall back to grpc.Server.Stop if GracefulStop overruns.
//
// [Server.Streams] and [Server.Missing] may be called at any time from any
// goroutine, for debug endpoints.
//
// # What it must never do
//
// Know about Kubernetes or translate anything: it serves what the xds.Store
// holds. Hold a lock shared with other streams while writing to the network.
// Answer state-of-the-world requests: those return codes.Unimplemented telling
// the user to set api_type DELTA_GRPC.
package delta
