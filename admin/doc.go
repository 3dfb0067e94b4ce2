// Package admin owns deltaeds' operations HTTP server, the one an operator,
// a kubelet and Prometheus talk to:
//
//   - /healthz: the process is alive (always 200 while it serves HTTP);
//   - /readyz: 200 once the first EndpointSlice list has been translated and
//     the store opened, 503 before. It stays 200 during an API-server outage,
//     because serving the last known endpoints is right then, and its body
//     says so, with the age of the last API-server event and contact;
//   - /metrics: the Prometheus registry it is given, to which it adds the Go
//     and process collectors, the build info (client_golang's version
//     collector over prometheus/common/version), and gauges read at scrape time
//     from the store, the xDS server and the watcher (subscriptions, names
//     subscribed, names subscribed that have no resource, resources in the
//     store, per-view variants held and built, the synced gate, API-server
//     watch health);
//   - /debug/pprof/: the Go profiler;
//   - /debug/resources: every stored CLA with its version, size and endpoint
//     counts per priority, and its per-view variants (topology-aware
//     endpoints: key, views and subscriptions served it, version, size,
//     counts) (?name=NAME adds the whole CLA and variants);
//   - /debug/streams: every Delta xDS stream as the xDS server describes it,
//     with its view (zone and node);
//   - /debug/missing: every name streams subscribe to by name that has no
//     resource (served an empty CLA: a typo, or a deleted Service), with the
//     node ids of the streams asking for it, as the xDS server lists them.
//
// It reads its sources through small interfaces (Store, Streams, Watcher),
// so it depends on their data types, never on how they are built or run.
//
// # Using this package
//
//  1. Build a [Config] with the store, the xDS server's stream listing and
//     the watcher (each through the small interface admin reads), and the
//     Prometheus registry the other packages registered their metrics in;
//     [New] adds the Go, process and build-info collectors and admin's own
//     gauges to it, so create it once per registry.
//  2. Call [Server.Serve] with a listener in its own goroutine (or mount
//     [Server.Handler] elsewhere); it returns http.ErrServerClosed after
//     Shutdown.
//  3. At shutdown call [Server.Shutdown] with a deadline; /readyz answers
//     until then, which is what lets a kubelet keep routing to a replica
//     that is draining its streams.
//
// # What it must never do
//
// Change anything it reports on: it never writes to the store, never touches
// a stream, never blocks the xDS path beyond the read locks List and Streams
// take. Its readiness must not depend on the API server being up. And it must
// never be imported by the xds, translate, watch or delta packages: it sits
// on top of them, wired by main.
package admin
