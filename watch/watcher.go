package watch

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// The defaults of Config, applied by New to fields left zero; deltaeds serve
// shows them as its flags' defaults.
const (
	// DefaultDeletedGracePeriod is how long a CLA a Service no longer
	// produces stays published, empty, before it is deleted from the store.
	DefaultDeletedGracePeriod = 5 * time.Minute
	// DefaultWorkers is the number of Services translated concurrently.
	DefaultWorkers = 2
	// DefaultProbeInterval is how often the API server's /readyz is probed.
	DefaultProbeInterval = 10 * time.Second
)

// cacheMinEndpoints is the size, in endpoint entries over all its slices,
// from which a Service is translated through a translate.ServiceCache: a
// change then costs what the changed slices and endpoints cost, rather than
// the whole Service, for memory: about 4.5 KB per endpoint of a two-port
// Service (BenchmarkServiceCacheMemory). Smaller Services are translated whole
// and hold nothing between changes, which keeps a cluster of many small
// Services at its memory per endpoint.
const cacheMinEndpoints = 1000

// Config configures a Watcher.
type Config struct {
	Client kubernetes.Interface
	Store  *xds.Store
	// Namespaces to watch; empty means all.
	Namespaces []string
	// LabelSelector restricts the EndpointSlices watched (server side).
	LabelSelector string
	// ServiceProxyName: "" watches, like kube-proxy, no slice labelled
	// service.kubernetes.io/service-proxy-name (a Service handed to another
	// proxy); a name watches exactly the slices labelled with it.
	ServiceProxyName string
	Translate        translate.Options
	// NodeLocality watches Nodes (cluster-scoped, read-only) and puts each
	// endpoint's region, from its Node's topology.kubernetes.io/region
	// label, in its CLA locality next to the zone: Envoy matches its own
	// node.locality against region, zone and sub_zone together. It sets
	// Translate.NodeRegion.
	NodeLocality bool
	// NodeZones watches Nodes (cluster-scoped, read-only) so that
	// [Watcher.NodeZone] answers the zone of a Node, from its
	// topology.kubernetes.io/zone label: the zone of a client that tells
	// only its node name. One Node informer serves both this and
	// NodeLocality.
	NodeZones bool
	// InternalTrafficPolicy watches Services (read-only, in Namespaces) and
	// sets Translate.InternalTrafficLocal for each Service whose
	// spec.internalTrafficPolicy is Local: a client that tells its node then
	// gets only the endpoints on that node (translate.Topology). A Service
	// whose policy changes is translated again.
	InternalTrafficPolicy bool
	// DeletedGracePeriod: see DefaultDeletedGracePeriod; 0 means the default.
	DeletedGracePeriod time.Duration
	// Workers translating Services concurrently; 0 means DefaultWorkers.
	Workers int
	Logger  *zap.Logger
	// Metrics receive the watcher's counters; nil creates unregistered ones.
	Metrics *Metrics
	// ProbeInterval is how often the API server's /readyz is probed to
	// report its health (informers do not say when a watch is merely
	// retrying); 0 means DefaultProbeInterval. While it is down, and list
	// or watch calls are held, it is probed every second (or every
	// ProbeInterval if shorter): see recovery.go.
	ProbeInterval time.Duration
}

// Watcher feeds an xds.Store from EndpointSlices.
type Watcher struct {
	cfg     Config
	log     *zap.Logger
	metrics *Metrics
	// queue is created by Run (its constructor starts goroutines that only
	// ShutDown ends); the informers that feed it start there too. It is a
	// delaying queue, not a rate-limited one: a sync cannot fail in a way a
	// retry would mend (it reads the informer's cache, translate is a pure
	// function, and the store skips a CLA it cannot serialize, which would
	// fail again on the same input: counted, logged, and retried only when
	// the Service's slices change). Delays are the deleted-grace rechecks.
	queue workqueue.TypedDelayingInterface[string]
	// informers by namespace ("" when watching all namespaces).
	informers map[string]cache.SharedIndexInformer
	factories []informers.SharedInformerFactory
	// nodes is the Node informer of Config.NodeLocality or
	// Config.NodeZones, else nil.
	nodes cache.SharedIndexInformer
	// serviceInformers by namespace ("" when watching all namespaces),
	// under Config.InternalTrafficPolicy; else empty.
	serviceInformers map[string]cache.SharedIndexInformer

	// observed holds, per Service key, when its first unprocessed event was
	// seen (time.Time). Handlers only LoadOrStore; workers LoadAndDelete.
	observed sync.Map

	mu sync.Mutex // guards services and caches
	// services remembers, per Service key, the CLA names it published and,
	// for names it no longer produces, since when they have been empty.
	services map[string]*published
	// caches holds, per Service key of a Service of at least
	// cacheMinEndpoints endpoints, its translate.ServiceCache. A cache is
	// used only by the goroutine syncing its key, which the workqueue makes
	// one at a time (and Run's first pass runs before any worker): the map
	// is guarded by mu, a cache itself is never shared.
	caches map[string]*translate.ServiceCache

	lastEvent atomic.Int64 // unix nanos of the last informer event or successful list
	// synced is closed once the first list is translated and the store
	// opened.
	synced chan struct{}

	// api probes the API server and holds the informers' calls while it is
	// down (recovery.go).
	api *apiServer
}

type published struct {
	names map[string]time.Time // CLA name -> zero if live, else when it was emptied
}

// New validates cfg and builds the informers; nothing runs, and no
// goroutine starts, until Run.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil || cfg.Store == nil {
		return nil, errors.New("watch: a Kubernetes client and a store are required")
	}
	selector, err := translate.ServedSelector(cfg.LabelSelector, cfg.ServiceProxyName)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	if cfg.DeletedGracePeriod <= 0 {
		cfg.DeletedGracePeriod = DefaultDeletedGracePeriod
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	w := &Watcher{
		cfg:              cfg,
		log:              cfg.Logger,
		metrics:          cfg.Metrics,
		informers:        make(map[string]cache.SharedIndexInformer),
		serviceInformers: make(map[string]cache.SharedIndexInformer),
		services:         make(map[string]*published),
		caches:           make(map[string]*translate.ServiceCache),
		synced:           make(chan struct{}),
		api:              newAPIServer(readyzProbe(cfg.Client), cfg.ProbeInterval, cfg.Logger, cfg.Metrics),
	}
	namespaces := cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	slim := newSlimmer() // one for every informer, so they share values too
	for _, ns := range dedupe(namespaces) {
		// The label selector is applied by endpointSliceInformer.
		opts := []informers.SharedInformerOption{informers.WithTransform(slim.slim)}
		if ns != metav1.NamespaceAll {
			opts = append(opts, informers.WithNamespace(ns))
		}
		f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, opts...)
		inf := f.InformerFor(&discoveryv1.EndpointSlice{}, w.api.endpointSliceInformer(ns, selector))
		indexers := cache.Indexers{byServiceIndex: indexByService}
		if cfg.NodeLocality {
			indexers[byNodeIndex] = indexByNode
		}
		if err := inf.AddIndexers(indexers); err != nil {
			return nil, fmt.Errorf("watch endpointslices: add index: %w", err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.onEvent("add", nil, obj) },
			UpdateFunc: func(old, obj any) { w.onEvent("update", old, obj) },
			DeleteFunc: func(obj any) { w.onEvent("delete", nil, obj) },
		}); err != nil {
			return nil, fmt.Errorf("watch endpointslices: add handler: %w", err)
		}
		namespace := ns
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			w.metrics.WatchErrors.Inc()
			w.log.Warn("EndpointSlice watch failed; retrying with backoff and serving the last known endpoints",
				zap.String("namespace", namespace), zap.Error(err))
		}); err != nil {
			return nil, fmt.Errorf("watch endpointslices: set watch error handler: %w", err)
		}
		w.informers[ns] = inf
		w.factories = append(w.factories, f)
		if cfg.InternalTrafficPolicy {
			f, inf, err := w.newServiceInformer(ns)
			if err != nil {
				return nil, err
			}
			w.serviceInformers[ns] = inf
			w.factories = append(w.factories, f)
		}
	}
	if cfg.NodeLocality || cfg.NodeZones {
		f, inf, err := w.newNodeInformer()
		if err != nil {
			return nil, err
		}
		w.nodes = inf
		w.factories = append(w.factories, f)
	}
	if cfg.NodeLocality {
		w.cfg.Translate.NodeRegion = w.nodeRegion
	}
	// Envoy ignores an EDS removal and keeps routing to the old hosts, so a
	// name subscribed by name that has no CLA is served as an empty one.
	cfg.Store.RegisterType(xds.EndpointType, func(name string) proto.Message { return translate.EmptyCLA(name) })
	return w, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// onEvent runs on the informer's goroutine: it must stay cheap.
func (w *Watcher) onEvent(kind string, oldObj, obj any) {
	now := time.Now()
	w.lastEvent.Store(now.UnixNano())
	w.metrics.Events.WithLabelValues(kind).Inc()
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	key := serviceKey(s)
	if old, ok := oldObj.(*discoveryv1.EndpointSlice); ok {
		// A slice relabelled to another Service, or unlabelled, leaves the
		// first one: that Service is translated again without it.
		if oldKey := serviceKey(old); oldKey != "" && oldKey != key {
			w.enqueue(oldKey, now)
		}
	}
	if key == "" {
		w.metrics.UnlabelledSlices.Inc()
		return
	}
	w.enqueue(key, now)
}

func (w *Watcher) enqueue(key string, at time.Time) {
	w.observed.LoadOrStore(key, at)
	w.queue.Add(key)
}

// Run starts the informers, waits for their first list, translates every
// Service once, marks the store synced and runs the workers until ctx ends.
// Call it once; every goroutine it starts has ended when it returns.
// It does not return because the API server is unreachable: the informers
// retry on their own, and the store keeps serving its last state.
func (w *Watcher) Run(ctx context.Context) error {
	w.queue = workqueue.NewTypedDelayingQueueWithConfig(
		workqueue.TypedDelayingQueueConfig[string]{Name: "deltaeds_services", MetricsProvider: queueMetrics{w.metrics}})
	defer w.queue.ShutDown()
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range w.factories {
			f.Shutdown()
		}
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.api.run(ctx)
	}()

	w.log.Info("waiting for the first EndpointSlice list", zap.Int("informers", len(w.informers)))
	syncs := make([]cache.InformerSynced, 0, len(w.informers)+len(w.serviceInformers)+1)
	for _, inf := range w.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	for _, inf := range w.serviceInformers {
		syncs = append(syncs, inf.HasSynced)
	}
	if w.nodes != nil {
		syncs = append(syncs, w.nodes.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return ctx.Err()
	}
	w.lastEvent.Store(time.Now().UnixNano())

	// Translate the first list before opening the gate; the keys are also in
	// the queue, where they will be no-ops.
	keys := w.allKeys()
	for _, key := range keys {
		w.sync(key)
	}
	w.cfg.Store.MarkSynced()
	close(w.synced)
	w.log.Info("EndpointSlices synced; serving", zap.Int("services", len(keys)),
		zap.Int("clas", w.cfg.Store.Len(xds.EndpointType)))

	for i := 0; i < w.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.processNext() {
			}
		}()
	}
	<-ctx.Done()
	w.queue.ShutDown()
	return nil
}

// APIServerHealth returns when the API server last answered a probe, and
// the error of the latest probe (nil when it answered).
func (w *Watcher) APIServerHealth() (lastOK time.Time, err error) { return w.api.health() }

// Synced reports whether the first list has been translated and the store
// opened. It stays true through API-server outages.
func (w *Watcher) Synced() bool {
	select {
	case <-w.synced:
		return true
	default:
		return false
	}
}

// SyncedCh is closed once the first list has been translated and the store
// opened; it is never closed if Run ends before that.
func (w *Watcher) SyncedCh() <-chan struct{} { return w.synced }

// LastEvent returns when the watcher last heard from the API server: an
// event, or the end of the first list.
func (w *Watcher) LastEvent() time.Time {
	n := w.lastEvent.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (w *Watcher) allKeys() []string {
	seen := map[string]bool{}
	for _, inf := range w.informers {
		for _, k := range inf.GetIndexer().ListIndexFuncValues(byServiceIndex) {
			seen[k] = true
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (w *Watcher) processNext() bool {
	key, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(key)
	w.sync(key)
	return true
}

// slicesOf returns the slices of one Service from the informer that watches
// its namespace.
func (w *Watcher) slicesOf(namespace, key string) []*discoveryv1.EndpointSlice {
	inf := w.informers[namespace]
	if inf == nil {
		inf = w.informers[metav1.NamespaceAll]
	}
	if inf == nil {
		return nil
	}
	objs, err := inf.GetIndexer().ByIndex(byServiceIndex, key)
	if err != nil {
		// Only an unknown index name fails, which would be a programming error.
		w.log.Error("read EndpointSlice index", zap.String("service", key), zap.Error(err))
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out
}

// translate translates one Service: through its ServiceCache when it is
// large (see cacheMinEndpoints), which only the caller, the goroutine
// syncing key, uses; whole otherwise, dropping any cache it had. Both give
// the same CLAs.
func (w *Watcher) translate(key, namespace, name string, in []*discoveryv1.EndpointSlice, opts translate.Options) translate.Result {
	n := 0
	for _, s := range in {
		n += len(s.Endpoints)
	}
	w.mu.Lock()
	c := w.caches[key]
	switch {
	case n < cacheMinEndpoints:
		delete(w.caches, key)
		c = nil
	case c == nil:
		c = translate.NewServiceCache(namespace, name)
		w.caches[key] = c
	}
	w.mu.Unlock()
	if c == nil {
		return translate.Service(namespace, name, in, opts)
	}
	return c.Translate(in, opts)
}

// ResourceUpdates returns the store updates for the CLAs of one Service's
// translation, as sync applies them (sync adds the empty CLAs and removals
// of names the Service no longer produces): each CLA with its assembled
// encoding when the translation has one, and its Topology as the store's
// Variants. The bench's deltaeds child applies a translation with it too.
func ResourceUpdates(res translate.Result, observedAt time.Time) []xds.ResourceUpdate {
	updates := make([]xds.ResourceUpdate, 0, len(res.CLAs))
	for i, c := range res.CLAs {
		u := xds.ResourceUpdate{Name: c.ClusterName, Message: c, ObservedAt: observedAt}
		if i < len(res.Encoded) {
			// Byte for byte the deterministic marshal of c: the store
			// hashes and frames it instead of marshaling c again.
			u.Encoded = res.Encoded[i]
		}
		if t := res.Topologies[c.ClusterName]; t != nil {
			// The store builds, for each view subscribed to the name, the
			// variant it gets; nil: every view gets c.
			u.Variants = claVariants{t}
		}
		updates = append(updates, u)
	}
	return updates
}

// sync translates one Service and applies its CLAs in one batch.
func (w *Watcher) sync(key string) {
	var observedAt time.Time
	if v, ok := w.observed.LoadAndDelete(key); ok {
		observedAt = v.(time.Time)
	}
	namespace, name, ok := strings.Cut(key, "/")
	if !ok {
		return
	}
	start := time.Now()
	opts := w.cfg.Translate
	opts.InternalTrafficLocal = w.serviceLocal(namespace, key)
	res := w.translate(key, namespace, name, w.slicesOf(namespace, key), opts)
	w.metrics.TranslateDuration.Observe(time.Since(start).Seconds())
	w.metrics.countSkipped(res.Skipped)

	now := time.Now()
	updates := ResourceUpdates(res, observedAt)
	produced := make(map[string]bool, len(res.CLAs))
	for _, c := range res.CLAs {
		produced[c.ClusterName] = true
	}

	w.mu.Lock()
	p := w.services[key]
	if p == nil {
		p = &published{names: make(map[string]time.Time)}
		w.services[key] = p
	}
	var recheck time.Duration
	for n := range produced {
		p.names[n] = time.Time{}
	}
	for n, emptied := range p.names {
		if produced[n] {
			continue
		}
		switch {
		case emptied.IsZero():
			// Envoy empties a cluster only on an empty CLA, never on a removal.
			p.names[n] = now
			updates = append(updates, xds.ResourceUpdate{Name: n, Message: translate.EmptyCLA(n), ObservedAt: observedAt})
			recheck = w.cfg.DeletedGracePeriod
		case now.Sub(emptied) >= w.cfg.DeletedGracePeriod:
			delete(p.names, n)
			updates = append(updates, xds.ResourceUpdate{Name: n})
		default:
			if left := w.cfg.DeletedGracePeriod - now.Sub(emptied); recheck == 0 || left < recheck {
				recheck = left
			}
		}
	}
	if len(p.names) == 0 {
		delete(w.services, key)
	}
	w.mu.Unlock()

	if recheck > 0 {
		w.queue.AddAfter(key, recheck)
	}
	if len(updates) == 0 {
		return
	}
	ch, err := w.cfg.Store.Apply(xds.EndpointType, updates)
	if err != nil {
		w.metrics.ApplyErrors.Inc()
		w.log.Error("store rejected CLAs", zap.String("service", key), zap.Error(err))
	}
	w.metrics.CLAChanges.Add(float64(ch.Set + ch.Deleted))
	if ch.Set+ch.Deleted > 0 {
		w.log.Debug("service translated", zap.String("service", key), zap.Int("set", ch.Set),
			zap.Int("deleted", ch.Deleted), zap.Int("unchanged", ch.Unchanged))
	}
}
