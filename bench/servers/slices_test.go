package servers

import (
	"net/netip"
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/translate"
	"github.com/deltaeds/deltaeds/xds"
)

const rolling = "bench/rolling/http"

func eps(first, n int) []control.Endpoint {
	out := make([]control.Endpoint, n)
	for i := range out {
		out[i] = control.Endpoint{Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(first + i)}), Port: 8080}
	}
	return out
}

func TestSliceAssembler(t *testing.T) {
	var a sliceAssembler
	a.set(control.Slice{ID: 0, Name: rolling, Slice: "s1", Endpoints: eps(1, 2)})
	a.set(control.Slice{ID: 0, Name: rolling, Slice: "s0", Endpoints: eps(10, 1)})
	got := a.set(control.Slice{ID: 3, Name: rolling, Slice: "s1", Endpoints: eps(1, 3)})
	if want := append(eps(10, 1), eps(1, 3)...); got.ID != 3 || got.Name != rolling || !slices.Equal(got.Endpoints, want) {
		t.Fatalf("after an update: %+v, want the slices' endpoints by slice name, %v", got, want)
	}
	got = a.set(control.Slice{ID: 4, Name: rolling, Slice: "s1"})
	if !slices.Equal(got.Endpoints, eps(10, 1)) {
		t.Fatalf("after deleting s1: %v", got.Endpoints)
	}
	a.set(control.Slice{ID: 0, Name: "bench/other/http", Slice: "o", Endpoints: eps(30, 1)})
	if all := a.all(); len(all) != 2 || all[0].Name != "bench/other/http" || all[1].ID != 4 || len(all[1].Endpoints) != 1 {
		t.Fatalf("all: %+v", all)
	}
}

// served decodes what the store serves for name.
func served(t *testing.T, d *deltaEDS, name string) (*endpointv3.ClusterLoadAssignment, *xds.Resource) {
	t.Helper()
	r := d.store.Get(xds.EndpointType, name)
	if r == nil {
		t.Fatalf("%s not served", name)
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := r.Wire.GetResource().UnmarshalTo(cla); err != nil {
		t.Fatal(err)
	}
	return cla, r
}

// deltaeds translates a Service sent slice by slice into exactly what
// translate.Service makes of the same slices, with every endpoint the
// slices hold, before and after one slice changes.
func TestDeltaEDSTranslatesSlices(t *testing.T) {
	d := newDeltaEDS(0)
	state := map[string][]control.Endpoint{"rolling-0": eps(1, 100), "rolling-1": eps(101, 50)}
	for _, sl := range []string{"rolling-0", "rolling-1"} {
		if err := d.SetSlice(control.Slice{ID: 0, Name: rolling, Slice: sl, Endpoints: state[sl]}); err != nil {
			t.Fatal(err)
		}
	}
	if d.store.Get(xds.EndpointType, rolling) != nil {
		t.Fatal("a slice before Load was served")
	}
	if err := d.Load(nil); err != nil {
		t.Fatal(err)
	}
	check := func(step string) *xds.Resource {
		t.Helper()
		cla, r := served(t, d, rolling)
		var all []control.Endpoint
		for _, e := range state {
			all = append(all, e...)
		}
		if p, ok := control.CLAPrint(cla); !ok || p != control.EndpointsPrint(all) {
			t.Fatalf("%s: served endpoints are not the slices' %d", step, len(all))
		}
		ss := d.services[rolling]
		whole := translate.Service(ss.namespace, ss.svc, ss.current(), translate.Options{})
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(whole.CLAs[0])
		if err != nil {
			t.Fatal(err)
		}
		got, err := proto.MarshalOptions{Deterministic: true}.Marshal(cla)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s: served CLA differs from translate.Service's", step)
		}
		return r
	}
	before := check("load")

	state["rolling-1"] = append(state["rolling-1"], eps(200, 1)...)
	if err := d.SetSlice(control.Slice{ID: 1, Name: rolling, Slice: "rolling-1", Endpoints: state["rolling-1"]}); err != nil {
		t.Fatal(err)
	}
	if after := check("one slice changed"); after.Version == before.Version {
		t.Fatal("a changed slice left the version as it was")
	}

	bad := control.Slice{ID: 2, Name: rolling, Slice: "rolling-0", Endpoints: []control.Endpoint{eps(1, 1)[0], {Addr: eps(2, 1)[0].Addr, Port: 9090}}}
	if err := d.SetSlice(bad); err == nil {
		t.Fatal("a slice with two ports was accepted")
	}
	check("a rejected slice changes nothing")

	for _, sl := range []string{"rolling-0", "rolling-1"} {
		delete(state, sl)
		if err := d.SetSlice(control.Slice{ID: 3, Name: rolling, Slice: sl}); err != nil {
			t.Fatal(err)
		}
	}
	if cla, _ := served(t, d, rolling); len(cla.GetEndpoints()) != 0 {
		t.Fatalf("with every slice deleted: %d localities, want the empty CLA", len(cla.GetEndpoints()))
	}

	if err := d.SetSlice(control.Slice{ID: 4, Name: "not-a-cluster-name", Slice: "s", Endpoints: eps(1, 1)}); err == nil {
		t.Fatal("a CLA name translate cannot make was accepted")
	}
}
