// Package envoysim owns a Delta xDS client that behaves like Envoy does for
// EDS, so that deltaeds can be tested, run end to end, demonstrated and
// benchmarked on a machine that has no Envoy binary.
//
// # What it does
//
// A [Client] keeps one Delta ADS stream
// (envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources)
// open to a server and subscribes to ClusterLoadAssignments by name, one name
// per cluster, the way Envoy's EDS does:
//
//   - it never subscribes to the wildcard unless [Config.Wildcard] asks it to,
//     and it sends nothing until it wants at least one name, because a first
//     request with no names means "wildcard" to a Delta server;
//   - the first request of each stream carries the node and, after a
//     reconnect, initial_resource_versions for everything it holds and every
//     name it wants; later requests carry only changes to the subscription and
//     ACKs or NACKs;
//   - every response is ACKed or NACKed exactly once, in order;
//   - a removal of a wanted name is remembered, so a test can tell "the server
//     said it is gone" from "the server never said anything".
//
// # What Envoy does, and where it says so
//
// The client keeps two views, because Envoy does: its xDS state ([Held],
// what the server last said and what a reconnect declares in
// initial_resource_versions) and what its clusters route to ([Route]). Tests
// that ask where traffic goes must use the second. The rules, each with the
// Envoy source it follows (see also ../shared/envoy-client-facts.md and the
// README's protocol section):
//
//   - An EDS removal does not change what the client routes to
//     (source/extensions/clusters/eds/eds.cc, EdsClusterImpl::onConfigUpdate:
//     removed resources are dropped; an update that adds nothing counts
//     update_empty and keeps the hosts). The xDS state forgets the name, so
//     a reconnect does not declare it, yet the old hosts stay. Only a CLA
//     with no endpoints empties a cluster; unsubscribing (removing the
//     cluster) drops it.
//   - A NACK can be partial (source/common/config/watch_map.cc,
//     WatchMap::onConfigUpdate): the response is decoded and validated whole
//     first ([Config.NACK] and the client's own checks reject it all), then
//     delivered cluster by cluster, stopping at the first that throws
//     ([Config.Reject] chooses it); clusters delivered before it keep what
//     they applied. No version of a NACKed response is recorded
//     (delta_subscription_state.cc: addResourceStateFromServer runs after
//     delivery), so a reconnect declares the previous versions.
//   - Reconnects wait as Envoy's GrpcStream does
//     (source/common/config/grpc_stream.h, with
//     JitteredExponentialBackOffStrategy from
//     source/common/common/backoff_strategy.cc): uniformly random below an
//     interval that starts at 500ms and doubles to 30s, reset once a stream
//     delivers a message. [Config.Backoff] overrides it for tests; figures
//     quoted as recovery times use the default.
//   - The connection is timed as Envoy's connection pool times it: the
//     connect timer (the cluster's connect_timeout, [Config.ConnectTimeout],
//     5s by default) runs from the TCP connect until the Connected event,
//     after TLS (ConnPoolImplBase::onConnectionEvent,
//     source/common/conn_pool/conn_pool_base.cc); the HTTP/2 preface and
//     the stream after it are not timed.
//   - A request is legacy wildcard only when it subscribes and unsubscribes
//     nothing (delta_subscription_state.cc), so the client never sends a
//     first request before it wants a name.
//   - Locality: [LocalHosts] is what zone-aware routing treats as local, a
//     priority's hosts whose locality equals the node's in region, zone and
//     sub_zone together (source/common/upstream/locality.h, LocalityEqualTo;
//     upstream_impl.cc, PriorityStateManager::updateClusterPrioritySet), and
//     [LocalityShares] how locality_weighted_lb_config splits a priority:
//     by load_balancing_weight (unset is 0, no traffic) times
//     min(1, 1.4 * healthy share) (HostSetImpl::effectiveLocalityWeight).
//
// It also gives tests control that Envoy does not: [Client.Stall] stops
// reading the stream so gRPC flow control pushes back on the server,
// [Client.Disconnect] drops the stream, [Config.NACK] rejects chosen
// responses, and [Config.OnApply] observes every applied response cheaply
// enough for benchmarks that run hundreds of clients with thousands of names.
//
// # Using this package
//
//  1. [New] with a [Config]: NodeID and Target (or a shared Conn); Locality
//     and the callbacks as the test needs.
//  2. [Client.Start] connects and keeps a stream open (reconnecting as Envoy
//     does) until the context ends or [Client.Close]; [Client.Run] does the
//     same and blocks.
//  3. [Client.Subscribe] and [Client.Unsubscribe] name the clusters, as
//     Envoy's cluster manager does when clusters come and go.
//  4. Ask where traffic goes with [Client.Route] or [Client.Routes] (what
//     Envoy routes to), and what the xDS state holds with [Client.Held];
//     wait for a condition with [Client.WaitFor], never with a sleep.
//  5. End with [Client.Close], and check [Client.Violations] is empty.
//
// # Strictness
//
// Envoy tolerates much. This package does not: anything the server does that
// the protocol forbids, or that a correct server would never do, is recorded
// as a [Violation] (never a panic, never silently ignored) and can be read
// with [Client.Violations]. A test of the server should end by checking that
// there are none. Responses the client rejects for their content (duplicate
// names, a name both updated and removed, a resource without a version, an
// Any that is not the subscribed type, a resource that fails Validate) are
// both NACKed and recorded as violations; a NACK asked for by [Config.NACK]
// or [Config.Reject] is not a violation.
//
// # Sharing decoded resources
//
// Envoys are separate processes, and each decodes and validates what it
// receives. A simulated fleet runs in one process, where N clients subscribed
// to one CLA would keep N decoded copies of identical bytes: about 5.8 KB of
// heap per subscription of a ten-endpoint CLA, which bounded the fleets the
// benchmark could run (issue 14). Clients given one [DecodeCache]
// ([Config.DecodeCache]; internal/envoyfleet gives one to all its clients)
// instead share the message decoded from a resource's bytes (the Any's value,
// per type URL), and the first receiver's name and version strings with it.
//
// This changes nothing a client does, only where the simulator keeps what it
// decoded:
//
//   - what is shared is a pure function of the type and the bytes
//     (unmarshalling and Validate read nothing else), so each client gets
//     exactly what it would have decoded itself;
//   - only successful decodes are shared: a body that fails is decoded,
//     rejected and NACKed by each client that receives it, and recorded as
//     each one's violation;
//   - the checks that depend on more than the bytes (names, versions,
//     duplicates, the Any's type against the subscription, cluster_name
//     against the resource name, [Config.NACK] and [Config.Reject]) run for
//     every client and every response;
//   - decoded messages were already read-only ([Held] and [Route] share
//     them rather than copy), and nothing in this package, envoyfleet, the
//     benchmark or the e2e helpers writes to one.
//
// Requests are encoded the way Envoy encodes them, each into a buffer of its
// own size (source/common/grpc/common.cc, Common::serializeToGrpcFrame),
// rather than into grpc-go's pooled buffers, whose 1 MB tier took every
// first request of a thousand names and held gigabytes across a fleet
// connecting at once (see requestCodec).
//
// The cache holds its entries weakly: an entry goes (through
// runtime.AddCleanup) once no client holds or routes with its message, so a
// fleet whose resources change keeps only what some client still uses.
//
// # Concurrency
//
// While started, a Client runs one goroutine that owns the gRPC connection's
// stream lifecycle: it opens a stream, receives on it, applies responses and
// reconnects with Envoy's jittered backoff when the stream ends. For each
// stream it starts one writer goroutine, the only caller of Send, which drains
// queued ACKs and subscription changes so that neither the receive loop nor a
// caller of [Client.Subscribe] ever blocks on a slow server. The writer is
// waited for before the next stream opens, and the run goroutine is waited for
// by [Client.Close], so once Close returns no goroutine of the client remains.
//
// One mutex, Client.mu, guards all mutable state: the wanted names, the held
// resources, the routes, removal marks, counters, violations and the per-stream
// bookkeeping (what the server was told, queued ACKs, nonces seen). It is
// never held across a network call or a user callback.
//
// # What it must never do
//
// Import any other package of this project: it is the independent witness
// that the server speaks the protocol, and sharing code with the server would
// let a shared bug pass unnoticed. And it must never be lenient about a
// protocol violation by the server: if a real Envoy would misbehave or hide
// the problem, this client records it.
package envoysim
