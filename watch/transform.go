package watch

import (
	"fmt"

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

// slimSlice keeps only what translate reads and what the informer needs.
// At 10,000+ Services, managedFields and annotations would otherwise be most
// of the memory the process holds. The endpoints' topology hints are kept:
// translate builds each CLA's variants for where a client runs from them
// (translate.Topology).
func slimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		// Tombstones and anything unexpected pass through unchanged.
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:              s.Name,
			Namespace:         s.Namespace,
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
				Conditions: e.Conditions,
				NodeName:   e.NodeName,
				Zone:       e.Zone,
				Hostname:   e.Hostname,
				Hints:      e.Hints,
			}
			if len(e.Addresses) > 0 {
				// Kubernetes defines the other addresses as fungible; only the
				// first is sent.
				slim.Addresses = e.Addresses[:1:1]
			}
			if e.TargetRef != nil {
				// The UID tells a pod from its re-created namesake when
				// translate pairs a pod's IPv4 and IPv6 endpoints.
				slim.TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Name: e.TargetRef.Name, Namespace: e.TargetRef.Namespace, UID: e.TargetRef.UID}
			}
			out.Endpoints[i] = slim
		}
	}
	return out, nil
}

var _ cache.TransformFunc = slimSlice
