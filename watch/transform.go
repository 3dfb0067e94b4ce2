package watch

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/deltaeds/deltaeds/translate"
)

// byServiceIndex indexes slices by their Service key, namespace/name.
const byServiceIndex = "byService"

// serviceKey returns the namespace/name key of the Service a slice belongs
// to, or "" when it carries no kubernetes.io/service-name label.
func serviceKey(s *discoveryv1.EndpointSlice) string {
	name := s.Labels[translate.ServiceNameLabel]
	if name == "" {
		return ""
	}
	return s.Namespace + "/" + name
}

func indexByService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, fmt.Errorf("index by service: unexpected %T", obj)
	}
	if key := serviceKey(s); key != "" {
		return []string{key}, nil
	}
	return nil, nil
}

// slimmer is the informers' transform: it slims every slice (slim) and
// shares, between all the slices it has seen, the values endpoints repeat:
// node names, zones, condition flags, the pod kind and the namespace. At
// 1,000,000 endpoints (issue 14's cluster-100k) the informer held ~490 bytes
// per endpoint, ~100 of them per-endpoint copies of these.
type slimmer struct {
	mu sync.Mutex // guards strs
	// strs maps a node name or zone to the one *string every endpoint
	// with it shares; bounded by maxShared (beyond it values are kept as
	// they come, so a hostile cluster cannot grow it without limit).
	strs map[string]*string
}

// maxShared bounds slimmer.strs: far above any cluster's nodes and zones.
const maxShared = 1 << 16

// The condition flags every endpoint shares. Informer objects are read-only
// (client-go's contract), so sharing them is safe.
var (
	sharedTrue, sharedFalse = true, false
	podKind                 = "Pod"
)

func newSlimmer() *slimmer { return &slimmer{strs: make(map[string]*string)} }

// str returns the shared pointer for *p's value.
func (sl *slimmer) str(p *string) *string {
	if p == nil {
		return nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if q, ok := sl.strs[*p]; ok {
		return q
	}
	if len(sl.strs) < maxShared {
		sl.strs[*p] = p
	}
	return p
}

// value returns the shared copy of v.
func (sl *slimmer) value(v string) string {
	if v == "" {
		return v
	}
	return *sl.str(&v)
}

func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &sharedTrue
	default:
		return &sharedFalse
	}
}

// slimSlice slims one slice with a slimmer of its own (tests).
func slimSlice(obj any) (any, error) { return newSlimmer().slim(obj) }

// slim keeps only what translate reads and what the informer needs.
// At 10,000+ Services, managedFields and annotations would otherwise be most
// of the memory the process holds. The endpoints' topology hints are kept:
// translate builds each CLA's variants for where a client runs from them
// (translate.Topology).
func (sl *slimmer) slim(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		// Tombstones and anything unexpected pass through unchanged.
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:              s.Name,
			Namespace:         sl.value(s.Namespace),
			UID:               s.UID,
			ResourceVersion:   s.ResourceVersion,
			DeletionTimestamp: s.DeletionTimestamp,
			// translate settles a port name carried with two protocols in
			// favour of the newest slice.
			CreationTimestamp: s.CreationTimestamp,
		},
		AddressType: s.AddressType,
		Ports:       s.Ports,
	}
	if name, ok := s.Labels[translate.ServiceNameLabel]; ok {
		out.Labels = map[string]string{translate.ServiceNameLabel: name}
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
		for i, e := range s.Endpoints {
			slim := discoveryv1.Endpoint{
				Conditions: discoveryv1.EndpointConditions{
					Ready:       sharedBool(e.Conditions.Ready),
					Serving:     sharedBool(e.Conditions.Serving),
					Terminating: sharedBool(e.Conditions.Terminating),
				},
				NodeName: sl.str(e.NodeName),
				Zone:     sl.str(e.Zone),
				Hostname: e.Hostname,
				Hints:    e.Hints,
			}
			if len(e.Addresses) > 0 {
				// Kubernetes defines the other addresses as fungible; only the
				// first is sent.
				slim.Addresses = e.Addresses[:1:1]
			}
			if e.TargetRef != nil {
				// The UID tells a pod from its re-created namesake when
				// translate pairs a pod's IPv4 and IPv6 endpoints.
				ref := &corev1.ObjectReference{Kind: e.TargetRef.Kind, Name: e.TargetRef.Name, Namespace: e.TargetRef.Namespace, UID: e.TargetRef.UID}
				if ref.Kind == podKind {
					ref.Kind = podKind
				}
				if ref.Namespace == out.Namespace {
					ref.Namespace = out.Namespace
				}
				slim.TargetRef = ref
			}
			out.Endpoints[i] = slim
		}
	}
	return out, nil
}

var _ cache.TransformFunc = newSlimmer().slim
