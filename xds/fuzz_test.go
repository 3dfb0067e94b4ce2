package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The fuzz target decodes its input as a sequence of operations, one opcode
// byte then its operands (an input that runs out reads zeros):
//
//	0 apply     k (k%4, 0 meaning 1), then k update bytes: name = b&3,
//	            gen = (b>>2)%5 (4 deletes)
//	1 subscribe stream, mask          mask: bits 0-3 names a-d, bit 4 the wildcard
//	2 unsub     stream, mask
//	3 both      stream, subscribe mask, unsubscribe mask
//	4 reconnect stream, subscribe mask, initial-versions mask, then one byte
//	            per declared name: gen = b%5 (4: a version that never existed)
//	5 next      stream, budget: (b%4)*60 bytes, 0 meaning no bound
//	6 sync
//	7 close     stream
//
// Two streams, each with its own notify channel, share one store.
const (
	fzApply = iota
	fzSubscribe
	fzUnsubscribe
	fzBoth
	fzReconnect
	fzNext
	fzSync
	fzClose
	fzOps
)

var fzNames = [fzOps]string{"apply", "subscribe", "unsubscribe", "both", "reconnect", "next", "sync", "close"}

// fuzzTrace logs the operations of every input, to check what seeds decode to.
var fuzzTrace = false

var fuzzNames = []string{"a", "b", "c", "d"}

const fuzzGens = 4

// fuzzUpdates[name][gen] sets name to its gen-th content; generations have
// different numbers of endpoints, so different sizes.
var fuzzUpdates = func() map[string][]ResourceUpdate {
	m := map[string][]ResourceUpdate{}
	for _, n := range fuzzNames {
		for gen := 0; gen < fuzzGens; gen++ {
			m[n] = append(m[n], ResourceUpdate{Name: n, Message: newCLA(n, gen, 1+3*gen)})
		}
	}
	return m
}()

// fuzzVersions[name][gen] is the version of fuzzUpdates[name][gen].
var fuzzVersions = func() map[string][]string {
	m := map[string][]string{}
	for n, us := range fuzzUpdates {
		for _, u := range us {
			r, err := NewResource(n, claType, u.Message)
			if err != nil {
				panic(err)
			}
			m[n] = append(m[n], r.Version)
		}
	}
	return m
}()

type fuzzStream struct {
	sub    *Subscription // nil when closed
	notify chan struct{}
	c      *simClient
}

func maskNames(mask byte) []string {
	var out []string
	for i, n := range fuzzNames {
		if mask&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if mask&(1<<4) != 0 {
		out = append(out, Wildcard)
	}
	return out
}

func FuzzSubscription(f *testing.F) {
	f.Add([]byte{})
	// Subscribe a and b, set a, sync, next.
	f.Add([]byte{fzSubscribe, 0, 0x03, fzApply, 1, 0 | 1<<2, fzSync, fzNext, 0, 0})
	// Wildcard, set everything, next with small budgets, delete, next.
	f.Add([]byte{fzSync, fzSubscribe, 1, 0x10, fzApply, 3, 0 | 3<<2, 1 | 3<<2, 2 | 3<<2, fzNext, 1, 1, fzNext, 1, 1,
		fzApply, 2, 0 | 4<<2, 3 | 4<<2, fzNext, 1, 0})
	// Reconnect with initial versions (current, stale, never existed), then sync.
	f.Add([]byte{fzApply, 2, 0 | 1<<2, 1 | 2<<2, fzReconnect, 0, 0x1f, 0x0f, 1, 0, 4, 2, fzNext, 0, 0, fzSync, fzNext, 0, 2})
	// Unsubscribe the wildcard, resubscribe, change and revert before Next.
	f.Add([]byte{fzSync, fzApply, 2, 0 | 1<<2, 1 | 1<<2, fzSubscribe, 0, 0x11, fzNext, 0, 0, fzUnsubscribe, 0, 0x10,
		fzApply, 2, 0 | 2<<2, 0 | 1<<2, fzSubscribe, 0, 0x10, fzNext, 0, 3, fzBoth, 0, 0x02, 0x01, fzNext, 0, 0})
	// Close one stream while the other keeps going.
	f.Add([]byte{fzSubscribe, 0, 0x01, fzSubscribe, 1, 0x01, fzSync, fzNext, 0, 0, fzClose, 0,
		fzApply, 1, 0 | 2<<2, fzNext, 1, 0, fzNext, 0, 0, fzSubscribe, 0, 0x02})
	// Everything before sync, then sync.
	f.Add([]byte{fzSubscribe, 0, 0x0f, fzSubscribe, 1, 0x10, fzApply, 3, 0 | 1<<2, 1 | 3<<2, 2 | 0<<2,
		fzNext, 0, 0, fzNext, 1, 0, fzApply, 1, 1 | 4<<2, fzSync, fzNext, 0, 1, fzNext, 1, 1})

	f.Fuzz(func(t *testing.T, data []byte) {
		// Every input runs twice: absent names answered by removals, and by
		// the stand-in deltaeds registers for CLAs.
		fuzzSubscription(t, data, nil)
		fuzzSubscription(t, data, emptyCLA)
	})
}

func fuzzSubscription(t *testing.T, data []byte, standIn AbsentFunc) {
	{
		pos := 0
		next := func() byte {
			if pos >= len(data) {
				pos++
				return 0
			}
			b := data[pos]
			pos++
			return b
		}
		s := NewStore()
		s.RegisterType(claType, standIn)
		model := map[string]int{} // name -> gen stored
		synced := false
		var streams [2]*fuzzStream
		var closed []chan struct{}
		open := func(i int) *fuzzStream {
			st := streams[i]
			if st == nil || st.sub == nil {
				ch := make(chan struct{}, 1)
				st = &fuzzStream{sub: s.Subscribe(claType, ch, 0), notify: ch, c: newSimClient()}
				st.c.standIn = standIn
				streams[i] = st
			}
			return st
		}
		closeStream := func(i int) {
			st := streams[i]
			if st == nil || st.sub == nil {
				return
			}
			st.sub.Close()
			st.sub.Close()
			if b := st.sub.Next(0); !b.Empty() {
				t.Fatalf("Next after Close: %v %v", resourceNames(b.Resources), b.Removed)
			}
			if err := st.sub.Update(SubscriptionChange{Subscribe: []string{"a"}}); err == nil {
				t.Fatal("Update after Close succeeded")
			}
			woken(st.notify)
			closed = append(closed, st.notify)
			st.sub = nil
		}
		update := func(st *fuzzStream, ch SubscriptionChange) {
			if err := st.sub.Update(ch); err != nil {
				t.Fatalf("Update(%+v): %v", ch, err)
			}
			st.c.update(ch)
		}
		take := func(st *fuzzStream, maxBytes int) {
			woken(st.notify)
			b := st.sub.Next(maxBytes)
			if !synced && !b.Empty() {
				t.Fatalf("Next before sync returned %v %v", resourceNames(b.Resources), b.Removed)
			}
			if err := st.c.apply(b, s); err != nil {
				t.Fatalf("Next(%d): %v", maxBytes, err)
			}
			if maxBytes > 0 && len(b.Resources)+len(b.Removed) > 1 {
				size := 0
				for _, r := range b.Resources {
					size += r.WireSize
				}
				for _, n := range b.Removed {
					size += len(n) + 2
				}
				if size > maxBytes {
					t.Fatalf("Next(%d) returned %d resources and %d removals of %d bytes", maxBytes, len(b.Resources), len(b.Removed), size)
				}
			}
		}

		// trace records the operations run, for the log of a failure.
		var trace []string
		defer func() {
			if t.Failed() || fuzzTrace {
				t.Logf("operations:\n%s", strings.Join(trace, "\n"))
			}
		}()
		for ops := 0; pos < len(data) && ops < 256; ops++ {
			start := pos
			op := next() % fzOps
			switch op {
			case fzApply:
				var batch []ResourceUpdate
				final := map[string]int{} // name -> gen, -1 deletes
				k := int(next() % 4)
				if k == 0 {
					k = 1
				}
				for ; k > 0; k-- {
					b := next()
					n := fuzzNames[b&3]
					if gen := int(b>>2) % (fuzzGens + 1); gen == fuzzGens {
						batch = append(batch, del(n))
						final[n] = -1
					} else {
						batch = append(batch, fuzzUpdates[n][gen])
						final[n] = gen
					}
				}
				var want ApplyResult
				changed := map[string]bool{}
				for n, gen := range final {
					old, exists := model[n]
					switch {
					case gen < 0 && !exists, gen >= 0 && exists && old == gen:
						want.Unchanged++
					case gen < 0:
						want.Deleted++
						changed[n] = true
						delete(model, n)
					default:
						want.Set++
						changed[n] = true
						model[n] = gen
					}
				}
				var touched []*fuzzStream
				for _, st := range streams {
					if st == nil || st.sub == nil {
						continue
					}
					for n := range changed {
						if st.c.wildcard || st.c.names[n] {
							touched = append(touched, st)
							break
						}
					}
				}
				want.Notified = len(touched)
				got, err := s.Apply(claType, batch)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("Apply reported %+v, want %+v", got, want)
				}
				for _, st := range touched {
					if len(st.notify) != 1 {
						t.Fatal("a subscription of a changed name was not woken")
					}
				}
			case fzSubscribe:
				st := open(int(next() % 2))
				update(st, SubscriptionChange{Subscribe: maskNames(next())})
			case fzUnsubscribe:
				st := open(int(next() % 2))
				update(st, SubscriptionChange{Unsubscribe: maskNames(next())})
			case fzBoth:
				st := open(int(next() % 2))
				update(st, SubscriptionChange{Subscribe: maskNames(next()), Unsubscribe: maskNames(next())})
			case fzReconnect:
				i := int(next() % 2)
				closeStream(i)
				st := open(i)
				first := SubscriptionChange{Subscribe: maskNames(next()), InitialVersions: map[string]string{}}
				declared := next()
				wildcard := false
				named := map[string]bool{}
				for _, n := range first.Subscribe {
					wildcard = wildcard || n == Wildcard
					named[n] = true
				}
				for j, n := range fuzzNames {
					// A client declares what it holds of what it subscribes.
					if declared&(1<<j) == 0 || !(wildcard || named[n]) {
						continue
					}
					if gen := int(next() % (fuzzGens + 1)); gen == fuzzGens {
						first.InitialVersions[n] = "never-existed"
					} else {
						first.InitialVersions[n] = fuzzVersions[n][gen]
					}
				}
				update(st, first)
			case fzNext:
				i := int(next() % 2)
				maxBytes := int(next()%4) * 60
				if st := streams[i]; st != nil && st.sub != nil {
					take(st, maxBytes)
				}
			case fzSync:
				s.MarkSynced()
				synced = true
			case fzClose:
				closeStream(int(next() % 2))
			}

			trace = append(trace, fmt.Sprintf("%-11s % x", fzNames[op], data[start:min(pos, len(data))]))

			// Invariants after every operation.
			for i, st := range streams {
				if st == nil || st.sub == nil {
					continue
				}
				stats := st.sub.Stats()
				if stats.Wildcard != st.c.wildcard || stats.Names != len(st.c.names) {
					t.Fatalf("stream %d: subscription %+v, client wildcard %v names %v", i, stats, st.c.wildcard, st.c.names)
				}
				if synced && stats.Pending > 0 && len(st.notify) == 0 {
					t.Fatalf("stream %d: %d names pending and no wake-up", i, stats.Pending)
				}
			}
			for _, ch := range closed {
				if len(ch) != 0 {
					t.Fatal("a closed subscription was woken")
				}
			}
			if s.Len(claType) != len(model) {
				t.Fatalf("store holds %d resources, model %d", s.Len(claType), len(model))
			}
			for n, gen := range model {
				if r := s.Get(claType, n); r == nil || r.Version != fuzzVersions[n][gen] {
					t.Fatalf("store %s = %v, want gen %d", n, r, gen)
				}
			}
			checkMissing(t, s, model, streams[:])
		}

		// Open the gate and let each stream take what it is woken for: it
		// must end holding exactly the store restricted to its subscription.
		s.MarkSynced()
		synced = true
		for i, st := range streams {
			if st == nil || st.sub == nil {
				continue
			}
			for j := 0; woken(st.notify); j++ {
				if j > 1000 {
					t.Fatalf("stream %d woken forever", i)
				}
				st.notify <- struct{}{} // take consumes it
				take(st, 60)
			}
			if b := st.sub.Next(0); !b.Empty() {
				t.Fatalf("stream %d: left pending without a wake-up: %v %v", i, resourceNames(b.Resources), b.Removed)
			}
			if err := st.c.converged(t, s); err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
		}
	}
}

// checkMissing: the store's missing names are exactly the names an open
// subscription names that have no resource, each with the subscriptions that
// name it; and its suggestion groups hold exactly the stored names.
func checkMissing(t *testing.T, s *Store, model map[string]int, streams []*fuzzStream) {
	t.Helper()
	want := map[string][]*Subscription{}
	for _, st := range streams {
		if st == nil || st.sub == nil {
			continue
		}
		for n := range st.c.names {
			if _, stored := model[n]; !stored {
				want[n] = append(want[n], st.sub)
			}
		}
	}
	missing := s.Missing(claType)
	if s.MissingCount(claType) != len(want) || len(missing) != len(want) {
		t.Fatalf("MissingCount %d, Missing %d names, want %d: %v", s.MissingCount(claType), len(missing), len(want), want)
	}
	for _, m := range missing {
		w, ok := want[m.Name]
		if !ok || len(w) != len(m.Subscriptions) {
			t.Fatalf("missing %s named by %d subscriptions, want %d (%v)", m.Name, len(m.Subscriptions), len(w), ok)
		}
		for _, sub := range w {
			if !slices.Contains(m.Subscriptions, sub) {
				t.Fatalf("missing %s lacks a subscription that names it", m.Name)
			}
		}
	}
	grouped := 0
	tstore := s.typeFor(claType)
	tstore.mu.RLock()
	for g, set := range tstore.groups {
		for n := range set {
			if _, stored := model[n]; !stored || GroupOf(n) != g {
				t.Errorf("group %q holds %q, stored %v", g, n, stored)
			}
			grouped++
		}
	}
	tstore.mu.RUnlock()
	if grouped != len(model) {
		t.Fatalf("groups hold %d names, store %d", grouped, len(model))
	}
}
