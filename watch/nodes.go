package watch

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Node labels read under Config.NodeLocality.
const (
	// RegionLabel is the well-known label holding a Node's region.
	RegionLabel = corev1.LabelTopologyRegion
	// ZoneLabel is the well-known label holding a Node's zone. The
	// EndpointSlice controller copies it into each endpoint's zone, which is
	// what translate reads; it is kept on the slimmed Node for /debug.
	ZoneLabel = corev1.LabelTopologyZone
)

// byNodeIndex indexes slices by the nodes their endpoints run on; it exists
// only under Config.NodeLocality, to find the Services a Node's region
// change touches.
const byNodeIndex = "byNode"

func indexByNode(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, fmt.Errorf("index by node: unexpected %T", obj)
	}
	var nodes []string
	seen := make(map[string]bool)
	for _, e := range s.Endpoints {
		if e.NodeName != nil && *e.NodeName != "" && !seen[*e.NodeName] {
			seen[*e.NodeName] = true
			nodes = append(nodes, *e.NodeName)
		}
	}
	return nodes, nil
}

// slimNode keeps a Node's name and its topology labels: a Node object is
// tens of kilobytes (images, conditions), of which deltaeds reads two labels.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:            n.Name,
		UID:             n.UID,
		ResourceVersion: n.ResourceVersion,
	}}
	for _, k := range []string{RegionLabel, ZoneLabel} {
		if v, ok := n.Labels[k]; ok {
			if out.Labels == nil {
				out.Labels = make(map[string]string, 2)
			}
			out.Labels[k] = v
		}
	}
	return out, nil
}

// newNodeInformer builds the cluster-scoped Node informer of
// Config.NodeLocality and Config.NodeZones and registers its handlers; it starts with the
// watcher's other factories.
func (w *Watcher) newNodeInformer() (informers.SharedInformerFactory, cache.SharedIndexInformer, error) {
	f := informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, informers.WithTransform(slimNode))
	inf := f.InformerFor(&corev1.Node{}, w.api.nodeInformer()) // calls held while the API server is down (recovery.go)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.onNode(nil, obj) },
		UpdateFunc: func(old, obj any) { w.onNode(old, obj) },
		DeleteFunc: func(obj any) { w.onNode(obj, nil) },
	}); err != nil {
		return nil, nil, fmt.Errorf("watch nodes: add handler: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.metrics.WatchErrors.Inc()
		w.log.Warn("Node watch failed; retrying with backoff and keeping the last known regions", zap.Error(err))
	}); err != nil {
		return nil, nil, fmt.Errorf("watch nodes: set watch error handler: %w", err)
	}
	return f, inf, nil
}

func nodeRegionOf(obj any) (name, region string) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return "", ""
	}
	return n.Name, n.Labels[RegionLabel]
}

// onNode runs on the Node informer's goroutine. A Node whose region changes
// (it appears, is relabelled or goes) re-translates the Services with an
// endpoint on it. Before the first sync nothing is enqueued: the first
// translation runs after every informer, the Node one included, has listed.
func (w *Watcher) onNode(oldObj, obj any) {
	oldName, oldRegion := nodeRegionOf(oldObj)
	name, region := nodeRegionOf(obj)
	if name == "" {
		name = oldName
	}
	// Under Config.NodeZones alone, a Node's labels change nothing
	// translated: a client's zone is read once, when its stream starts.
	if !w.cfg.NodeLocality || name == "" || oldRegion == region || !w.Synced() {
		return
	}
	w.metrics.NodeRegionChanges.Inc()
	now := time.Now()
	for _, inf := range w.informers {
		objs, err := inf.GetIndexer().ByIndex(byNodeIndex, name)
		if err != nil {
			w.log.Error("read EndpointSlice node index", zap.String("node", name), zap.Error(err))
			continue
		}
		for _, o := range objs {
			if s, ok := o.(*discoveryv1.EndpointSlice); ok {
				if key := serviceKey(s); key != "" {
					w.enqueue(key, now)
				}
			}
		}
	}
}

// nodeRegion is translate.Options.NodeRegion under Config.NodeLocality: a
// read of the Node informer's cache, safe from any goroutine.
func (w *Watcher) nodeRegion(node string) string {
	obj, ok, err := w.nodes.GetIndexer().GetByKey(node)
	if err != nil || !ok {
		return ""
	}
	_, region := nodeRegionOf(obj)
	return region
}
