package watch

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

// claVariants gives the store a CLA's variants per view: it converts
// xds.View to translate.View, so that translate never imports xds.
type claVariants struct{ t *translate.Topology }

var _ xds.Variants = claVariants{}

func toTranslateView(v xds.View) translate.View { return translate.View{Zone: v.Zone, Node: v.Node} }

// Key is the variant a client at v receives; "" is the plain CLA.
func (c claVariants) Key(v xds.View) string { return c.t.Key(toTranslateView(v)) }

// Build returns the variant for v. The store calls it only when Key(v) is
// not "", for which translate.Topology.CLA never returns nil; a nil CLA is
// still returned as a nil interface, never as a typed nil.
func (c claVariants) Build(v xds.View) proto.Message {
	if cla := c.t.CLA(toTranslateView(v)); cla != nil {
		return cla
	}
	return nil
}

// slimService keeps a Service's identity and the policies deltaeds reads:
// spec.internalTrafficPolicy, and spec.trafficDistribution for /debug (the
// EndpointSlice controller turns the latter into the hints translate reads).
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            s.Name,
			Namespace:       s.Namespace,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		Spec: corev1.ServiceSpec{
			InternalTrafficPolicy: s.Spec.InternalTrafficPolicy,
			TrafficDistribution:   s.Spec.TrafficDistribution,
		},
	}, nil
}

// internalTrafficLocal reports whether obj, a Service or its tombstone, has
// internalTrafficPolicy Local; false for nil.
func internalTrafficLocal(obj any) bool {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	s, ok := obj.(*corev1.Service)
	return ok && s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
}

func serviceObjectKey(obj any) string {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return tomb.Key
	}
	s, ok := obj.(*corev1.Service)
	if !ok {
		return ""
	}
	return s.Namespace + "/" + s.Name
}

// newServiceInformer builds the Service informer of one namespace ("" for
// all) under Config.InternalTrafficPolicy and registers its handlers; it
// starts with the watcher's other factories.
func (w *Watcher) newServiceInformer(ns string) (informers.SharedInformerFactory, cache.SharedIndexInformer, error) {
	opts := []informers.SharedInformerOption{informers.WithTransform(slimService)}
	if ns != metav1.NamespaceAll {
		opts = append(opts, informers.WithNamespace(ns))
	}
	f := informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, opts...)
	inf := f.InformerFor(&corev1.Service{}, w.api.serviceInformer(ns)) // calls held while the API server is down (recovery.go)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.onService(nil, obj) },
		UpdateFunc: func(old, obj any) { w.onService(old, obj) },
		DeleteFunc: func(obj any) { w.onService(obj, nil) },
	}); err != nil {
		return nil, nil, fmt.Errorf("watch services: add handler: %w", err)
	}
	namespace := ns
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.metrics.WatchErrors.Inc()
		w.log.Warn("Service watch failed; retrying with backoff and keeping the last known policies",
			zap.String("namespace", namespace), zap.Error(err))
	}); err != nil {
		return nil, nil, fmt.Errorf("watch services: set watch error handler: %w", err)
	}
	return f, inf, nil
}

// onService runs on a Service informer's goroutine. A Service whose
// internalTrafficPolicy becomes or stops being Local (it appears, is edited
// or goes) is translated again; any other change to a Service changes
// nothing deltaeds serves. It enqueues even before the first sync (the
// translation is then a no-op in the store), so that no change can fall
// between the first list's translation and the opening of the store.
func (w *Watcher) onService(oldObj, obj any) {
	if internalTrafficLocal(oldObj) == internalTrafficLocal(obj) {
		return
	}
	key := serviceObjectKey(obj)
	if key == "" {
		key = serviceObjectKey(oldObj)
	}
	if key == "" {
		return
	}
	now := time.Now()
	w.lastEvent.Store(now.UnixNano())
	w.metrics.ServicePolicyChanges.Inc()
	w.enqueue(key, now)
}

// serviceLocal reports whether the Service key, in namespace, has
// internalTrafficPolicy Local, from the Service informer's cache; false
// without Config.InternalTrafficPolicy, and for a Service not (yet) seen.
func (w *Watcher) serviceLocal(namespace, key string) bool {
	inf := w.serviceInformers[namespace]
	if inf == nil {
		inf = w.serviceInformers[metav1.NamespaceAll]
	}
	if inf == nil {
		return false
	}
	obj, ok, err := inf.GetIndexer().GetByKey(key)
	return err == nil && ok && internalTrafficLocal(obj)
}

// NodeZone returns the zone of a Kubernetes Node, its
// topology.kubernetes.io/zone label, from the Node informer's cache: ""
// when the Node is unknown, unlabelled, or when no Node informer runs
// (neither Config.NodeZones nor Config.NodeLocality). It is safe for
// concurrent use and does not block: main gives it to delta as the zone of
// a client that tells only its node.
func (w *Watcher) NodeZone(node string) string {
	if w.nodes == nil || node == "" {
		return ""
	}
	obj, ok, err := w.nodes.GetIndexer().GetByKey(node)
	if err != nil || !ok {
		return ""
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return ""
	}
	return n.Labels[ZoneLabel]
}
