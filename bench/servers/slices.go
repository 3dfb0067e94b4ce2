package servers

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/translate"
)

// SliceServer is a server that takes the slice commands of a workload
// itself, as EndpointSlices, and translates them (deltaeds). The child
// gives every other server the CLA the slices make up (sliceAssembler).
type SliceServer interface {
	// SetSlice sets one slice. Before Load it only records it; Load then
	// serves the translation of every Service recorded. After Load it is one
	// change, translated and applied at once.
	SetSlice(s control.Slice) error
}

// sliceAssembler keeps the slices of the CLAs a workload sends slice by
// slice, for the servers that take whole CLAs: each slice command gives
// the CLA's whole new content, its slices' endpoints by slice name.
type sliceAssembler struct {
	clas map[string]*assembledCLA
}

type assembledCLA struct {
	id  uint64
	eps map[string][]control.Endpoint // by slice name
}

// set records s and returns the CLA's whole content after it.
func (a *sliceAssembler) set(s control.Slice) control.Set {
	if a.clas == nil {
		a.clas = make(map[string]*assembledCLA)
	}
	c := a.clas[s.Name]
	if c == nil {
		c = &assembledCLA{eps: make(map[string][]control.Endpoint)}
		a.clas[s.Name] = c
	}
	c.id = s.ID
	if len(s.Endpoints) == 0 {
		delete(c.eps, s.Slice)
	} else {
		c.eps[s.Slice] = s.Endpoints
	}
	return c.content(s.Name)
}

func (c *assembledCLA) content(name string) control.Set {
	n := 0
	for _, eps := range c.eps {
		n += len(eps)
	}
	out := control.Set{ID: c.id, Name: name, Endpoints: make([]control.Endpoint, 0, n)}
	for _, sl := range slices.Sorted(maps.Keys(c.eps)) {
		out.Endpoints = append(out.Endpoints, c.eps[sl]...)
	}
	return out
}

// all returns every CLA's whole content, by CLA name.
func (a *sliceAssembler) all() []control.Set {
	out := make([]control.Set, 0, len(a.clas))
	for _, name := range slices.Sorted(maps.Keys(a.clas)) {
		out = append(out, a.clas[name].content(name))
	}
	return out
}

// slicedService is one Service a workload sends slice by slice, as
// deltaeds' watch holds it: its EndpointSlices and the ServiceCache that
// translates them. Its CLA is translated from the slices alone; it carries
// no change marker (control.CLAPrint attributes it).
type slicedService struct {
	name           string // the CLA's, see translate.ClusterName
	namespace, svc string
	port           string
	cache          *translate.ServiceCache
	slices         map[string]*discoveryv1.EndpointSlice // by name
}

func newSlicedService(name string) (*slicedService, error) {
	ns, svc, port, ok := translate.ParseClusterName(name)
	if !ok {
		return nil, fmt.Errorf("slice: %q is not a CLA name translate.ClusterName makes", name)
	}
	return &slicedService{name: name, namespace: ns, svc: svc, port: port,
		cache: translate.NewServiceCache(ns, svc), slices: make(map[string]*discoveryv1.EndpointSlice)}, nil
}

// set replaces (or, without endpoints, deletes) one slice. The slice's
// resourceVersion is the change id, so the ServiceCache translates it
// again and keeps every other slice's translation.
func (ss *slicedService) set(s control.Slice) error {
	if len(s.Endpoints) == 0 {
		delete(ss.slices, s.Slice)
		return nil
	}
	es, err := ss.endpointSlice(s)
	if err != nil {
		return err
	}
	ss.slices[s.Slice] = es
	return nil
}

// endpointSlice is s as the EndpointSlice controller writes a slice of
// ready pods: one address each, one port. The pods' names, nodes and zones
// are left out, so that the translated CLA holds what the CLA the other
// servers are given holds: addresses and ports.
func (ss *slicedService) endpointSlice(s control.Slice) (*discoveryv1.EndpointSlice, error) {
	first := s.Endpoints[0]
	at := discoveryv1.AddressTypeIPv4
	if first.Addr.Is6() {
		at = discoveryv1.AddressTypeIPv6
	}
	port, proto, portName := int32(first.Port), corev1.ProtocolTCP, ss.port
	ready, serving, terminating := true, true, false
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ss.namespace, Name: s.Slice,
			UID:             types.UID(ss.namespace + "/" + s.Slice),
			ResourceVersion: strconv.FormatUint(s.ID, 10),
			Labels:          map[string]string{discoveryv1.LabelServiceName: ss.svc},
		},
		AddressType: at,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		Endpoints:   make([]discoveryv1.Endpoint, len(s.Endpoints)),
	}
	for i, e := range s.Endpoints {
		if e.Port != first.Port || e.Addr.Is6() != first.Addr.Is6() {
			return nil, fmt.Errorf("slice %s %s: endpoints %v and %v differ in port or family; an EndpointSlice has one of each",
				s.Name, s.Slice, first, e)
		}
		es.Endpoints[i] = discoveryv1.Endpoint{
			Addresses:  []string{e.Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		}
	}
	return es, nil
}

// current returns the Service's slices, by name.
func (ss *slicedService) current() []*discoveryv1.EndpointSlice {
	out := make([]*discoveryv1.EndpointSlice, 0, len(ss.slices))
	for _, k := range slices.Sorted(maps.Keys(ss.slices)) {
		out = append(out, ss.slices[k])
	}
	return out
}

// translate translates the Service's slices with deltaeds' default
// options, as watch does for a large Service.
func (ss *slicedService) translate() translate.Result {
	return ss.cache.Translate(ss.current(), translate.Options{})
}
