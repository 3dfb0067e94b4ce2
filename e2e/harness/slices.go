package harness

import (
	"fmt"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"net/netip"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// EndpointState maps each usable endpoint address of a Service to the priority deltaeds must
// give it: 0 when ready, 1 when serving and terminating (kube-proxy's reading of the
// conditions). Other endpoints are absent.
type EndpointState map[netip.Addr]uint32

// SliceState reads the usable endpoints of a Service's EndpointSlices.
func SliceState(slices []*discoveryv1.EndpointSlice) EndpointState {
	st := EndpointState{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			c := ep.Conditions
			switch {
			case c.Ready == nil || *c.Ready:
				st[ip] = 0
			case (c.Serving == nil || *c.Serving) && c.Terminating != nil && *c.Terminating:
				if _, ready := st[ip]; !ready {
					st[ip] = 1
				}
			}
		}
	}
	return st
}

// CLAState reads the usable endpoints of a CLA the same way.
func CLAState(cla *endpointv3.ClusterLoadAssignment) EndpointState {
	st := EndpointState{}
	for _, e := range Endpoints(cla) {
		if ip, err := netip.ParseAddr(e.IP); err == nil && UsableHealth(e.Health) {
			st[ip] = e.Priority
		}
	}
	return st
}

// SliceWatcher calls a function with a Service's endpoint state whenever one of its
// EndpointSlices changes, as the API server tells a watcher (deltaeds hears the same news).
type SliceWatcher struct {
	factory informers.SharedInformerFactory
	stop    chan struct{}
}

// WatchSlices starts watching the EndpointSlices of namespace ns and waits for the first list.
// fn runs on the informer's goroutine, with the time the change was heard.
func WatchSlices(client kubernetes.Interface, ns string, fn func(service string, st EndpointState, at time.Time)) (*SliceWatcher, error) {
	w := &SliceWatcher{
		factory: informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns)),
		stop:    make(chan struct{}),
	}
	inf := w.factory.Discovery().V1().EndpointSlices()
	lister := inf.Lister()
	notify := func(obj any) {
		at := time.Now()
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			return
		}
		all, err := lister.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc}))
		if err != nil {
			return
		}
		fn(svc, SliceState(all), at)
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return nil, fmt.Errorf("harness: watching EndpointSlices: %w", err)
	}
	w.factory.Start(w.stop)
	for typ, ok := range w.factory.WaitForCacheSync(w.stop) {
		if !ok {
			w.Stop()
			return nil, fmt.Errorf("harness: EndpointSlice informer %v did not sync", typ)
		}
	}
	return w, nil
}

// Stop stops the watch and waits for its goroutines.
func (w *SliceWatcher) Stop() {
	close(w.stop)
	w.factory.Shutdown()
}
