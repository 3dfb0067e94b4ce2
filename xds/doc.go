// Package xds owns the versioned resource store that deltaeds serves from, and
// the per-stream subscriptions that say which of its resources each client
// wants and has.
//
// # What it holds
//
// A [Store] keeps resources by type URL and name. Each [Resource] is
// serialized once, deterministically, when it is set, and its version is a
// hash of those bytes. Equal content therefore has an equal version on every
// replica and after every restart, which is what lets a reconnecting client
// present initial_resource_versions and receive nothing when nothing changed.
// Setting a resource to content equal to what is stored is a no-op: no new
// version, no notification.
//
// # Subscriptions and pending sets
//
// A [Subscription] is one stream's interest in one type: the names it
// subscribed to (or a wildcard), what its client holds of each name (the
// version it was last sent or declared, or that it was told the name does not
// exist), and a pending set of names whose state may differ from what the
// client holds. Whether a name is subscribed to and what is held of it share
// one map entry per name, so answering a pending name looks it up once. The
// store indexes subscriptions by name and keeps a list of wildcard
// subscriptions, so an update touches only the subscriptions of the names it
// changed: its cost does not depend on the number of resources in the store,
// nor on how many names each subscription holds.
//
// A pending set is a set, not a queue: a name changed ten times while its
// stream was busy is sent once, at its latest version. A subscription's memory
// is therefore bounded by its subscriptions, never by the rate of change, and a
// slow stream costs nothing to anyone else.
//
// # Absent names and stand-ins
//
// A type registered with an [AbsentFunc] serves a name that a subscription
// names but that has no resource as the function's message (deltaeds: an
// empty ClusterLoadAssignment), never as a bare removal: Envoy ignores EDS
// removals and would keep routing to the last hosts. The stand-in is built
// once per name when the first subscription names it or when its resource is
// deleted, shared by every subscriber, and dropped with the last subscription
// that names it; its version is a content hash like any other. Wildcard
// subscriptions, and types without an AbsentFunc, get removals.
//
// Such a name is missing, whatever it is served as: the store counts the
// missing names ([Store.MissingCount]), lists them with the subscriptions
// that name them ([Store.Missing]), and says which names of a list are
// absent ([Store.Absent], [Subscription.MissingNames]), so that a client
// naming one can be told. [Store.Suggest] offers the published names
// closest to a missing one by edit distance, among the names of its group:
// the part before the first "/" ([GroupOf]). That is a plain string rule
// (for deltaeds' NAMESPACE/SERVICE/PORT names, the namespace); the store
// keeps a group index, changed only when a name is created or deleted, and
// bounds the work (no suggestions in a group of over [MaxSuggestGroup]
// names, a banded distance that stops beyond the largest useful one).
//
// # Views and variants
//
// A client may say where it runs: its [View] (zone and node name, opaque to
// the store beyond equality), fixed when its subscription is opened
// ([Store.SubscribeView]; [Store.Subscribe] is the zero View, which always
// gets the plain resource). A resource's producer may give an update
// [Variants]: Key(view) names the variant a client at that view receives
// ("" for the plain resource), Build(view) builds it. The store then keeps,
// per name, the plain resource and one variant per distinct non-empty key
// of the views subscribed to the name, by name or by wildcard:
//
//   - A variant is built and serialized once per change and key, outside the
//     type lock, and shared by every subscription of every view with that
//     key; its version is a hash of its bytes like any other, so replicas
//     agree and a client declaring the variant's version is resent nothing.
//   - The store counts, per name with Variants, the subscriptions of each
//     view (wildcard ones once per type), so an Apply of such a name costs
//     O(distinct views subscribed to it) keys and at most one build per
//     distinct key, never O(subscriptions); it recomputes every view's key
//     (keys may change with the content) and marks pending only the
//     subscriptions whose delivered version changed.
//   - A view's first subscription to a name builds its variant if its key
//     is new (outside the lock, like stand-ins); a key whose last view goes
//     drops its variant. A name whose resource has no Variants keeps no
//     views: the common case costs nothing, nor do zero-view subscriptions.
//   - A name with no resource is served its stand-in in every view; a
//     deleted name drops its variants.
//
// [Store.Variants] lists a name's variants and [Store.VariantStats] counts
// them, for debug pages and metrics.
//
// # NACKs
//
// A client may apply part of a response before rejecting one of its
// resources. [Subscription.Rejected] queues the resources of a rejected
// response that carried several to be sent again, each alone, once; a
// resource rejected alone is not resent until it changes.
//
// # Locking
//
// Each type has its own RWMutex guarding its resources, its subscription
// index and its views and variants. Each Subscription has its own mutex guarding its names, versions and
// pending set. The lock order is Subscription.mu before typeStore.mu; Apply
// never holds a type lock while it takes a subscription's lock: it collects the
// affected subscriptions under the type lock, releases it, then marks them.
// Nothing in this package writes to a network or blocks on a client: waking a
// stream is a non-blocking send on a channel of capacity one.
//
// # The synced gate
//
// Until [Store.MarkSynced] is called, a subscription's [Subscription.Next]
// returns nothing, so a replica that has not yet loaded its first full state
// never tells a client that a resource does not exist.
//
// # Using this package
//
// The store has one writer side (deltaeds: watch) and one reader side per
// stream and type (deltaeds: delta); [Example] runs both. The writer's duties:
//
//  1. Create the store with [NewStore] and register every served type with
//     [Store.RegisterType] before any stream subscribes to it, with the
//     [AbsentFunc] its subscribed-but-missing names are served as (deltaeds:
//     translate.EmptyCLA for [EndpointType]; nil sends removals). An
//     unregistered type is one the store has never heard of: [Store.HasType]
//     is false, and delta ignores requests for it.
//  2. Write with [Store.Apply]: one call per batch of one type, each
//     [ResourceUpdate] a name set to a message or deleted (nil Message). The
//     store serializes and versions each message once; equal content is a
//     no-op. A message that fails to marshal is left out and reported in the
//     error, and the rest of the batch is applied: log it, do not stop. When
//     clients at different places must receive different content (deltaeds:
//     translate.Topology for topology-aware CLAs), set the update's
//     [Variants], an immutable value whose Key is cheap (it runs under the
//     type lock); leave it nil otherwise. [Example_variants] shows one.
//  3. Call [Store.MarkSynced] once the first full state has been applied, and
//     not before: until then no subscription is answered, so no client is
//     told that a resource it asks for does not exist.
//
// The reader's duties, for one stream and one type:
//
//  1. Open a [Subscription] with [Store.SubscribeView] for a client at a
//     [View] (where it runs, fixed for the subscription's life), or with
//     [Store.Subscribe] for one that tells no place, giving it a notify
//     channel of capacity one (a stream may share one between its types) and
//     the most names it may hold.
//  2. Hand it each request's changes with [Subscription.Update] (a
//     [SubscriptionChange]: names subscribed and unsubscribed, and on the
//     first request the versions the client already holds). An error
//     wrapping [ErrTooManyNames] leaves the subscription unchanged.
//  3. Whenever notify is signalled, call [Subscription.Next] with the
//     response size budget and send what it returns: it is recorded as sent,
//     so a batch that is not sent is lost. A non-empty batch may leave names
//     pending; the subscription signals notify again for them. Pace calls by
//     the client's ACKs: what changes meanwhile is sent once, at its latest
//     version.
//  4. When the client rejects a response, pass its resource names to
//     [Subscription.Rejected], so each is resent alone.
//  5. [Subscription.Close] it when the stream ends; it is idempotent.
//
// Update, Next, Rejected and Close may be called from different goroutines,
// and the writer's calls from others still; nothing here blocks on a client.
//
// # What it must never do
//
// Know about Kubernetes, gRPC or the xDS wire protocol's nonces and ACKs: those
// belong to the watch and delta packages. It only stores bytes and versions
// and answers "what should this subscriber be sent next".
package xds
