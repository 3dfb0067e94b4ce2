package envoysim

import (
	"fmt"
	"runtime"
	"sync"
	"weak"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// DecodeCache lets the clients of a fleet share the resources they decode:
// clients that receive the same bytes for a resource of the same type hold
// one decoded message instead of one each. A fleet of N clients subscribed to
// one CLA otherwise keeps N identical copies, which is what limits the size
// of the fleets the benchmark can run (issue 14).
//
// It changes nothing a client does: see "Sharing decoded resources" in the
// package documentation. Set it in [Config.DecodeCache]; the zero value is
// ready to use, and it is safe for concurrent use. An entry lives as long as
// some client holds or routes with its message, and no longer: the cache
// keeps it only weakly.
type DecodeCache struct {
	mu sync.Mutex
	// byType maps a type URL, then a resource body (the Any's value) to
	// what was decoded from it. Bodies are keyed per type because the same
	// bytes can be valid for two types and decode differently.
	byType map[string]map[string]weak.Pointer[decoded]
}

// Len is the number of distinct resource bodies the cache knows, live or
// not yet collected. For tests and benchmarks that report sharing.
func (dc *DecodeCache) Len() int {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	n := 0
	for _, m := range dc.byType {
		n += len(m)
	}
	return n
}

// get returns the live message decoded from body, or nil. A []byte to
// string conversion used only as a map index does not allocate.
func (dc *DecodeCache) get(typeURL string, body []byte) *decoded {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return dc.byType[typeURL][string(body)].Value()
}

// put records d as decoded from body, unless another client stored a live
// one meanwhile, which is then returned instead so that both share it.
func (dc *DecodeCache) put(typeURL string, body []byte, d *decoded) *decoded {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	m := dc.byType[typeURL]
	if old := m[string(body)].Value(); old != nil {
		return old
	}
	if m == nil {
		if dc.byType == nil {
			dc.byType = make(map[string]map[string]weak.Pointer[decoded])
		}
		m = make(map[string]weak.Pointer[decoded])
		dc.byType[typeURL] = m
	}
	k := cacheKey{typeURL: typeURL, body: string(body), wp: weak.Make(d)}
	m[k.body] = k.wp
	// The key (not d: that would keep d reachable forever) tells the
	// cleanup which entry to drop once no client references d.
	runtime.AddCleanup(d, dc.drop, k)
	return d
}

// cacheKey names one entry, and the weak pointer it held when it was
// stored, for its cleanup.
type cacheKey struct {
	typeURL, body string
	wp            weak.Pointer[decoded]
}

// drop removes the entry of a message no client references any more. The
// body may have been decoded and stored again since the message died (a
// lookup found the weak pointer already nil): that newer entry is left
// alone, which is why the weak pointer is compared and not its value.
func (dc *DecodeCache) drop(k cacheKey) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	m := dc.byType[k.typeURL]
	if wp, ok := m[k.body]; ok && wp == k.wp {
		delete(m, k.body)
		if len(m) == 0 {
			delete(dc.byType, k.typeURL)
		}
	}
}

// decoded is one resource body, decoded and validated: what the client's
// xDS state and routes point to. With a DecodeCache it is shared by every
// client that received the same bytes, so nothing may write to it.
type decoded struct {
	msg proto.Message
	// name and version are the strings the first receiver got with the
	// body. Later receivers that got equal ones use these instead of their
	// own (see intern), so that a fleet keeps one copy of a name and a
	// version per body rather than one per client.
	name, version string
}

// cla is the message when it is a ClusterLoadAssignment, else nil.
func (d *decoded) cla() *endpointv3.ClusterLoadAssignment {
	c, _ := d.msg.(*endpointv3.ClusterLoadAssignment)
	return c
}

// intern returns shared when it equals s, so that s's own copy can be
// collected with the response it came in.
func intern(s, shared string) string {
	if s == shared {
		return shared
	}
	return s
}

// decodeAny unmarshals and validates one resource body of type typeURL,
// named name with the given version, through dc when it is not nil.
//
// What is cached is a pure function of the type and the bytes: unmarshalling
// and Validate read nothing else, so a client that reuses another's result
// gets exactly what it would have computed (Envoy decodes and validates in
// each process; sharing immutable results between simulated processes is how
// the simulator stores them, not what they do). Only successes are cached: a
// body that fails is decoded and rejected again by every client that
// receives it. The checks that depend on more than the bytes (the Any's type
// against the subscription, cluster_name against the resource's name, and
// everything decodeResponse checks about the response) run for every client
// and every response.
func decodeAny(dc *DecodeCache, typeURL, name, version string, a *anypb.Any) (*decoded, error) {
	if a == nil {
		return nil, fmt.Errorf("no resource body")
	}
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("body is of type %q, not %q", a.GetTypeUrl(), typeURL)
	}
	if dc != nil {
		if d := dc.get(typeURL, a.GetValue()); d != nil {
			return d, nil
		}
	}
	var msg proto.Message
	if typeURL == TypeURLClusterLoadAssignment {
		cla := new(endpointv3.ClusterLoadAssignment)
		if err := a.UnmarshalTo(cla); err != nil {
			return nil, fmt.Errorf("decode ClusterLoadAssignment: %w", err)
		}
		msg = cla
	} else {
		var err error
		if msg, err = a.UnmarshalNew(); err != nil {
			return nil, fmt.Errorf("decode %s: %w", typeURL, err)
		}
	}
	if v, ok := msg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
	}
	d := &decoded{msg: msg, name: name, version: version}
	if dc != nil {
		d = dc.put(typeURL, a.GetValue(), d)
	}
	return d, nil
}
