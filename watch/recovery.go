package watch

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers/internalinterfaces"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Recovery after an API-server outage.
//
// When the API server goes away, client-go's reflector retries its watch with a jittered
// exponential backoff (0.8 s doubling to 30 s, up to a minute with jitter), so after an outage of
// half a minute deltaeds would notice the API server is back up to a minute late, serving stale
// endpoints meanwhile. client-go offers no informer option to change that backoff
// (ReflectorOptions.Backoff is not reachable through informers, TODO(#136943) in reflector.go),
// so the list and watch calls of the informers go through apiServer.hold: a call that gets no
// answer, confirmed by /readyz not answering either, is held (not failed) until a probe of
// /readyz, once a second, sees the API server ready, then it goes out at once. The reflector
// never sees those failures, so its backoff does not grow. Only the probe reaches a down API
// server, once per recoveryProbeInterval; a held call also goes out every maxHold in case /readyz
// lies, so it is never later than client-go would have been.

const (
	// recoveryProbeInterval is how often /readyz is asked while the API server is down.
	recoveryProbeInterval = time.Second
	// maxHold bounds how long a call is held without trying: client-go's own longest backoff.
	maxHold = 30 * time.Second
	// probeTimeout bounds one /readyz request.
	probeTimeout = 5 * time.Second
)

// apiServer probes the API server's /readyz, reports its health, and holds the informers' list
// and watch calls while it is down.
type apiServer struct {
	probe    func(context.Context) error // GET /readyz
	interval time.Duration               // between probes while it is up
	retry    time.Duration               // between probes while it is down
	log      *zap.Logger
	metrics  *Metrics

	kick chan struct{} // buffered 1: probe now

	probeMu sync.Mutex // serialises probes

	mu       sync.Mutex
	lastOK   time.Time     // when a probe last succeeded
	err      error         // the latest probe's error
	probedAt time.Time     // when the latest probe started
	down     bool          // the latest probe found the API server not ready
	up       chan struct{} // closed while not down
	held     int           // calls waiting for the API server
}

func newAPIServer(probe func(context.Context) error, interval time.Duration, log *zap.Logger, m *Metrics) *apiServer {
	up := make(chan struct{})
	close(up)
	return &apiServer{
		probe: probe, interval: interval, retry: min(interval, recoveryProbeInterval),
		log: log, metrics: m, kick: make(chan struct{}, 1), up: up,
	}
}

// readyzProbe asks the client's API server for /readyz.
func readyzProbe(client kubernetes.Interface) func(context.Context) error {
	return func(ctx context.Context) error {
		rc := client.Discovery().RESTClient()
		if rc == nil {
			return nil // fake clients have no REST client: assume healthy
		}
		return rc.Get().AbsPath("/readyz").Do(ctx).Error()
	}
}

// run probes every interval (every retry while the API server is down) until ctx ends. A
// kick makes it look again at when the next probe is due: hold's probes count.
func (a *apiServer) run(ctx context.Context) {
	for ctx.Err() == nil {
		a.probeNow(ctx, time.Time{})
		for due := false; !due; {
			a.mu.Lock()
			d := a.interval
			if a.down {
				d = a.retry
			}
			wait := time.Until(a.probedAt.Add(d))
			a.mu.Unlock()
			if wait <= 0 {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-a.kick:
			case <-t.C:
				due = true
			}
			t.Stop()
		}
	}
}

// probeNow probes unless a probe that started after since has already answered, and returns
// whether the API server is down.
func (a *apiServer) probeNow(ctx context.Context, since time.Time) bool {
	a.probeMu.Lock()
	defer a.probeMu.Unlock()
	a.mu.Lock()
	if !since.IsZero() && a.probedAt.After(since) {
		down := a.down
		a.mu.Unlock()
		return down
	}
	a.mu.Unlock()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err := a.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	return a.record(start, err)
}

// record notes a probe's outcome and returns whether the API server is down.
func (a *apiServer) record(start time.Time, err error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	wasErr, wasDown := a.err != nil, a.down
	a.err, a.probedAt = err, start
	if err == nil {
		a.lastOK = time.Now()
	}
	// A refusal (401, 403, 404) says nothing about readiness: calls are not held then.
	a.down = err != nil && !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err)
	switch {
	case a.down && !wasDown:
		a.up = make(chan struct{})
	case !a.down && wasDown:
		close(a.up)
	}
	switch {
	case err != nil && !wasErr:
		a.metrics.WatchErrors.Inc()
		a.log.Warn("API server unreachable; serving the last known endpoints, holding list and watch calls until it is ready",
			zap.Error(err))
	case err != nil:
		a.metrics.WatchErrors.Inc()
	case wasErr:
		a.log.Info("API server reachable again; list and watch calls resume", zap.Int("held_calls", a.held))
	}
	return a.down
}

// health returns when the API server last answered a probe, and the latest probe's error.
func (a *apiServer) health() (time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastOK, a.err
}

// hold runs call, a list or watch request. A call that gets no answer while /readyz does not
// answer either is tried again as soon as a probe finds the API server ready, or after maxHold;
// any other outcome is returned to the reflector, whose own handling applies.
func (a *apiServer) hold(ctx context.Context, call func(context.Context) error) error {
	for {
		if err := a.waitUp(ctx); err != nil {
			return err
		}
		start := time.Now()
		err := call(ctx)
		if err == nil || ctx.Err() != nil || !unanswered(err) {
			return err
		}
		// Ask /readyz now (sharing any probe that started after this call did); if it is down,
		// the probe loop switches to the retry interval.
		if !a.probeNow(ctx, start) {
			return err
		}
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// waitUp returns when the API server is not known to be down, after maxHold, or when ctx ends.
func (a *apiServer) waitUp(ctx context.Context) error {
	a.mu.Lock()
	up := a.up
	a.held++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.held--
		a.mu.Unlock()
	}()
	t := time.NewTimer(maxHold)
	defer t.Stop()
	select {
	case <-up:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unanswered reports whether err means the request got no answer from the API server: no HTTP
// status at all (connection refused or reset, EOF, timeout), or 503 from a server going away.
func unanswered(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return apierrors.IsServiceUnavailable(err)
	}
	return true
}

// listWatch is a ListerWatcher whose calls go through hold. client is the clientset the calls
// use; it tells the reflector whether the client supports watch-list semantics, as client-go's
// generated informers do.
func (a *apiServer) listWatch(client any, list cache.ListWithContextFunc, watch cache.WatchFuncWithContext) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			var out runtime.Object
			err := a.hold(ctx, func(ctx context.Context) (err error) {
				out, err = list(ctx, o)
				return err
			})
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (apiwatch.Interface, error) {
			var out apiwatch.Interface
			err := a.hold(ctx, func(ctx context.Context) (err error) {
				out, err = watch(ctx, o)
				return err
			})
			return out, err
		},
	}, client)
}

// endpointSliceInformer builds, for an informer factory, the EndpointSlice informer of one
// namespace ("" for all) as client-go's generated one does, with calls going through hold.
func (a *apiServer) endpointSliceInformer(namespace, selector string) internalinterfaces.NewInformerFunc {
	return func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		slices := client.DiscoveryV1().EndpointSlices(namespace)
		return a.informer(client, resync, &discoveryv1.EndpointSlice{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.LabelSelector = selector
				return slices.List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (apiwatch.Interface, error) {
				o.LabelSelector = selector
				return slices.Watch(ctx, o)
			})
	}
}

// serviceInformer builds, for an informer factory, the Service informer of one namespace ("" for
// all) as client-go's generated one does, with calls going through hold.
func (a *apiServer) serviceInformer(namespace string) internalinterfaces.NewInformerFunc {
	return func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		services := client.CoreV1().Services(namespace)
		return a.informer(client, resync, &corev1.Service{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return services.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (apiwatch.Interface, error) {
				return services.Watch(ctx, o)
			})
	}
}

// nodeInformer builds, for an informer factory, the cluster-scoped Node informer as client-go's
// generated one does, with calls going through hold.
func (a *apiServer) nodeInformer() internalinterfaces.NewInformerFunc {
	return func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		nodes := client.CoreV1().Nodes()
		return a.informer(client, resync, &corev1.Node{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nodes.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (apiwatch.Interface, error) {
				return nodes.Watch(ctx, o)
			})
	}
}

// informer is a shared informer of obj's type whose list and watch calls go through hold, with
// the namespace index client-go's generated informers have.
func (a *apiServer) informer(client kubernetes.Interface, resync time.Duration, obj runtime.Object,
	list cache.ListWithContextFunc, watch cache.WatchFuncWithContext) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformerWithOptions(a.listWatch(client, list, watch), obj, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync,
		Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
	})
}
