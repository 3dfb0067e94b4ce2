package xds

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltaeds/deltaeds/internal/supervisor"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// countingCLA is a ClusterLoadAssignment that counts how often it is
// serialized: proto.Marshal asks a message for its reflection once per
// serialization, and the store does nothing else with a message it is given.
type countingCLA struct {
	*endpointv3.ClusterLoadAssignment
	marshals *atomic.Int64
}

func (m countingCLA) ProtoReflect() protoreflect.Message {
	m.marshals.Add(1)
	return m.ClusterLoadAssignment.ProtoReflect()
}

// benchEndpoints is the number of endpoints of a benchmark CLA.
const benchEndpoints = 10

// changeCLA makes m differ from every previous content: its first endpoint's
// port becomes 10000+i (a port is a uint32; 10000+i never repeats in a run).
func changeCLA(m *endpointv3.ClusterLoadAssignment, i int) {
	sa := m.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress()
	sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(10000 + i)}
}

type benchStream struct {
	sub    *Subscription
	notify chan struct{}
}

// benchSetup returns a synced store of `resources` CLAs named cla-00000... and
// `streams` streams subscribed to the first `names` of them, with nothing
// left to send.
func benchSetup(b *testing.B, resources, streams, names int) (*Store, []benchStream, []string) {
	b.Helper()
	s := NewStore()
	all := make([]string, resources)
	updates := make([]ResourceUpdate, resources)
	for i := range all {
		all[i] = fmt.Sprintf("cla-%05d", i)
		updates[i] = ResourceUpdate{Name: all[i], Message: newCLA(all[i], 0, benchEndpoints)}
	}
	if _, err := s.Apply(claType, updates); err != nil {
		b.Fatal(err)
	}
	s.MarkSynced()
	subscribed := all[:names]
	out := make([]benchStream, streams)
	for i := range out {
		ch := make(chan struct{}, 1)
		sub := s.Subscribe(claType, ch, 0)
		if err := sub.Update(SubscriptionChange{Subscribe: subscribed}); err != nil {
			b.Fatal(err)
		}
		for !sub.Next(0).Empty() {
		}
		woken(ch)
		out[i] = benchStream{sub, ch}
	}
	return s, out, subscribed
}

// benchChanges applies one changed CLA per iteration, cycling over names, and
// delivers it to every stream woken. It reports the time per change, split
// between Apply and the Next calls, the process's CPU time per change (which,
// unlike the wall time, a loaded machine's other work does not inflate), how
// many serializations one change costs and how many distinct *Resource one
// change hands to its subscribers.
func benchChanges(b *testing.B, s *Store, streams []benchStream, names []string) {
	var marshals atomic.Int64
	msgs := make([]countingCLA, len(names))
	for i, n := range names {
		msgs[i] = countingCLA{newCLA(n, 0, benchEndpoints), &marshals}
	}
	batch := make([]ResourceUpdate, 1)
	var applyDur, nextDur time.Duration
	distinct, deliveries := 0, 0

	b.ReportAllocs()
	changes := 0
	cpu0 := supervisor.SelfCPU()
	for b.Loop() {
		k := changes % len(names)
		changeCLA(msgs[k].ClusterLoadAssignment, changes)
		batch[0] = ResourceUpdate{Name: names[k], Message: msgs[k]}

		t0 := time.Now()
		ch, err := s.Apply(claType, batch)
		t1 := time.Now()
		if err != nil || ch.Set != 1 {
			b.Fatalf("Apply: %+v %v", ch, err)
		}
		var first *Resource
		for _, st := range streams {
			select {
			case <-st.notify:
			default:
				continue
			}
			batch := st.sub.Next(0)
			if len(batch.Resources) != 1 {
				b.Fatalf("change %d: a stream got %d resources", changes, len(batch.Resources))
			}
			r := batch.Resources[0]
			if first == nil {
				first = r
				distinct++
			} else if r != first {
				distinct++
			}
			deliveries++
		}
		nextDur += time.Since(t1)
		applyDur += t1.Sub(t0)
		changes++
	}
	cpu := supervisor.SelfCPU() - cpu0

	if deliveries != changes*len(streams) {
		b.Fatalf("%d deliveries for %d changes to %d streams", deliveries, changes, len(streams))
	}
	if distinct != changes {
		b.Fatalf("%d distinct *Resource for %d changes: subscribers do not share the stored resource", distinct, changes)
	}
	if m := marshals.Load(); m != int64(changes) {
		b.Fatalf("%d serializations for %d changes", m, changes)
	}
	c := float64(changes)
	b.ReportMetric(float64(applyDur+nextDur)/c, "ns/change")
	b.ReportMetric(float64(cpu)/c, "cpu-ns/change")
	b.ReportMetric(float64(applyDur)/c, "apply-ns/change")
	b.ReportMetric(float64(nextDur)/float64(deliveries), "next-ns/delivery")
	b.ReportMetric(float64(marshals.Load())/c, "marshal/change")
	b.ReportMetric(float64(distinct)/c, "resources/change")
}

// BenchmarkApplyStoreSize: the cost of a change must not depend on how many
// resources the store holds. Ten streams hold the same ten names; each op
// changes one of them and delivers it.
func BenchmarkApplyStoreSize(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("resources=%d", n), func(b *testing.B) {
			s, streams, names := benchSetup(b, n, 10, 10)
			benchChanges(b, s, streams, names)
		})
	}
}

// BenchmarkApplySubscribers: a change is serialized once whatever the number
// of streams subscribed to it; only the deliveries grow with them.
func BenchmarkApplySubscribers(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			s, streams, names := benchSetup(b, 100, n, 1)
			benchChanges(b, s, streams, names)
		})
	}
}

// BenchmarkApplyViews: a change to a name with variants builds one variant
// per distinct key of the views subscribed to it, whatever the number of
// streams; views=0 is the same fleet with no view (the plain resource only).
// 100 streams are spread over the views; each op changes the name (its plain
// resource and every variant) and delivers it to every stream.
func BenchmarkApplyViews(b *testing.B) {
	const streams = 100
	for _, nviews := range []int{0, 1, 3, 10} {
		b.Run(fmt.Sprintf("views=%d", nviews), func(b *testing.B) {
			s := NewStore()
			var builds atomic.Int64
			zones := map[string]int{}
			for z := range nviews {
				zones[fmt.Sprintf("z%d", z)] = 0
			}
			update := func(gen int) ResourceUpdate {
				u := ResourceUpdate{Name: "cla", Message: newCLA("cla", gen, benchEndpoints)}
				if nviews > 0 {
					zs := make(map[string]int, len(zones))
					for z := range zones {
						zs[z] = gen
					}
					u.Variants = zoneVariants{"cla", zs, &builds}
				}
				return u
			}
			if _, err := s.Apply(claType, []ResourceUpdate{update(0)}); err != nil {
				b.Fatal(err)
			}
			s.MarkSynced()
			subs := make([]benchStream, streams)
			for i := range subs {
				var v View
				if nviews > 0 {
					v = View{Zone: fmt.Sprintf("z%d", i%nviews), Node: fmt.Sprintf("n%d", i)}
				}
				ch := make(chan struct{}, 1)
				sub := s.SubscribeView(claType, v, ch, 0)
				b.Cleanup(sub.Close)
				if err := sub.Update(SubscriptionChange{Subscribe: []string{"cla"}}); err != nil {
					b.Fatal(err)
				}
				for !sub.Next(0).Empty() {
				}
				woken(ch)
				subs[i] = benchStream{sub, ch}
			}
			builds.Store(0)
			b.ReportAllocs()
			changes := 0
			for b.Loop() {
				changes++
				if _, err := s.Apply(claType, []ResourceUpdate{update(changes)}); err != nil {
					b.Fatal(err)
				}
				for _, st := range subs {
					if !woken(st.notify) {
						b.Fatalf("change %d: a stream was not woken", changes)
					}
					if got := st.sub.Next(0); len(got.Resources) != 1 {
						b.Fatalf("change %d: a stream got %d resources", changes, len(got.Resources))
					}
				}
			}
			b.ReportMetric(float64(builds.Load())/float64(changes), "variants/change")
		})
	}
}

// BenchmarkApplyLargeSubscriptions: a change to one name fanned out to
// streams that each hold 1,000 names (Envoys of a large mesh): what each
// delivery costs must not grow with the names a stream holds besides it.
func BenchmarkApplyLargeSubscriptions(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			s, streams, names := benchSetup(b, 2000, n, 1000)
			benchChanges(b, s, streams, names)
		})
	}
}

// BenchmarkSubscriptionMemory: what a stream of 1,000 names costs to open
// and answer, and the heap it keeps once answered (its subscription's state
// and its entries in the store's index), per name; each op is one stream.
// fresh streams subscribe and are sent every name; reconnect streams also
// declare the versions they hold, as a reconnecting Envoy does, and are sent
// nothing. Each stream's names are strings of its own, as a decoded request's
// are (copying them is part of the op's CPU and allocation).
func BenchmarkSubscriptionMemory(b *testing.B) {
	const names = 1000
	for _, reconnect := range []bool{false, true} {
		b.Run(map[bool]string{false: "fresh", true: "reconnect"}[reconnect], func(b *testing.B) {
			s, _, subscribed := benchSetup(b, 2000, 0, names)
			declared := make(map[string]string, names)
			for _, n := range subscribed {
				declared[n] = s.Get(claType, n).Version
			}
			request := func() SubscriptionChange {
				var change SubscriptionChange
				change.Subscribe = make([]string, len(subscribed))
				for i, n := range subscribed {
					change.Subscribe[i] = strings.Clone(n)
				}
				if reconnect {
					change.InitialVersions = make(map[string]string, len(declared))
					for n, v := range declared {
						change.InitialVersions[strings.Clone(n)] = v
					}
				}
				return change
			}
			var subs []*Subscription
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			cpu0 := supervisor.SelfCPU()
			for b.Loop() {
				sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
				if err := sub.Update(request()); err != nil {
					b.Fatal(err)
				}
				sent := 0
				for batch := sub.Next(0); !batch.Empty(); batch = sub.Next(0) {
					sent += len(batch.Resources)
				}
				if want := map[bool]int{false: names, true: 0}[reconnect]; sent != want {
					b.Fatalf("sent %d resources, want %d", sent, want)
				}
				subs = append(subs, sub)
			}
			b.StopTimer()
			b.ReportMetric(float64(supervisor.SelfCPU()-cpu0)/float64(len(subs)), "cpu-ns/op")
			runtime.GC()
			runtime.ReadMemStats(&after)
			retained := float64(after.HeapAlloc) - float64(before.HeapAlloc)
			b.ReportMetric(retained/float64(len(subs)*names), "B/name-retained")
			runtime.KeepAlive(subs)
		})
	}
}
