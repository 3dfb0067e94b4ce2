// Package watch owns deltaeds' view of Kubernetes: raw client-go informers on
// discovery.k8s.io/v1 EndpointSlices, a workqueue of Service keys, and the
// workers that translate one Service's slices into CLAs and write them to the
// xds.Store.
//
// # The loop
//
// This is client-go's informer -> workqueue -> worker loop. Event handlers do
// nothing but note when a Service's first unprocessed event was seen and add
// its key (namespace/name) to the queue, so a burst of changes to one Service
// is one translation and the informer is never held up. Workers read every
// slice of the Service from the informer's index, call translate.Service (or,
// for a Service of 1,000 endpoints or more, its translate.ServiceCache, which
// re-translates and re-encodes only what changed and hands the store the
// encoded bytes), and apply the Service's CLAs to the store in one batch. Equal content is a no-op
// in the store, so relists after a watch restart or a 410 Gone cost nothing
// downstream.
//
// # Deleted Services and removed ports
//
// Envoy ignores a delta removal of an EDS resource (it keeps its last hosts),
// but empties a cluster on an empty ClusterLoadAssignment. The watcher
// registers translate.EmptyCLA as the store's stand-in for absent names, so a
// client that names a CLA the store does not hold is always served it empty.
// A CLA the Service no longer produces is first published empty, and deleted
// from the store only after Config.DeletedGracePeriod: wildcard subscribers
// see it empty for that long before its removal, and a Service re-created
// meanwhile simply updates it.
//
// # Sync and outages
//
// The store is marked synced only after every informer has listed and every
// Service of that first list has been translated, so a starting replica never
// answers "does not exist" for a Service it has not read yet. After that, an
// API-server outage changes nothing downstream: the store keeps serving its
// last state, and Run returns only when its context ends. The informers' list
// and watch calls that get no answer while /readyz does not answer either are
// held, not failed, and go out as soon as a probe (once a second while it is
// down) finds the API server ready again: client-go's reflector backoff, up to
// a minute, never sits between the API server's return and deltaeds noticing.
//
// # Using this package
//
// [Example] runs a Watcher against a fake clientset. The caller's duties:
//
//  1. Give [New] a Kubernetes client and the xds.Store to feed, in a
//     [Config]; Config.Metrics from [NewMetrics] on the registry /metrics
//     serves. New registers xds.EndpointType with its empty-CLA stand-in and
//     checks the selector (a bad one is an error), but starts nothing. Do
//     not register that type, write its CLAs or mark the store synced
//     yourself: the Watcher owns all three.
//  2. Call [Watcher.Run] once, in a goroutine of its own. It returns only
//     when its context ends, whatever the API server does, and by then every
//     goroutine it started has ended: cancel the context and wait for Run to
//     shut the watcher down.
//  3. Report ready only once the store is synced: [Watcher.SyncedCh] is
//     closed, and [Watcher.Synced] true, when Run has translated the first
//     list and marked the store (whose Synced agrees). A SyncedCh still open
//     when Run returns never closes: select on both. [Watcher.LastEvent] and
//     [Watcher.APIServerHealth] say how the API server is doing, for
//     health endpoints, and are no reason to stop serving.
//
// # What it must never do
//
// Serve gRPC, know the xDS protocol, or exit because the API server is gone.
// Do I/O, wait on locks or translate on the informer's event path.
package watch
