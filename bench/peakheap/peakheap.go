// Package peakheap follows a process's live heap after every GC and keeps
// the largest value seen, with a heap profile taken at it: the bench's
// children report it beside their peak RSS, and the bench parent (the
// witness fleet) profiles itself with it. It measures; it changes nothing.
package peakheap

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"
)

// Tracker follows the live heap (what the last GC marked) and keeps the
// largest value seen, with a heap profile taken at it when asked to.
//
// Peak RSS, the bench's memory figure, is reached during a server's initial
// sync and includes what Go's GC lets garbage grow to (about as much again
// as the live heap at GOGC=100), so a difference in peak RSS between two
// servers does not say what was live at the peak. The live heap after each
// GC does, and a heap profile's in-use figures are those of the most recent
// GC, so a profile written right after a GC that set a new maximum shows
// what filled the heap at the peak.
type Tracker struct {
	// profile takes a heap profile at each new maximum (see WriteProfile).
	profile bool

	mu   sync.Mutex // guards live and prof
	live uint64
	prof []byte
}

// pollInterval is how often the GC count is read: a heap of hundreds of MB
// is collected far less often than this.
const pollInterval = 20 * time.Millisecond

// profileStep is how much a new maximum must exceed the last profiled one
// before a profile is taken again; it bounds the profiles written while the
// heap grows to a few dozen.
const profileStep = 1.05

// run samples until ctx is done; Start runs it on a goroutine and waits for
// it to return.
//
// A heap profile's in-use figures are published once a cycle's sweep is
// done, so a profile written right after the GC that set a maximum may
// still show the cycle before. The profile is therefore taken once the next
// cycle has started (its predecessor's sweep is then complete), or at the
// end: it shows the heap at the maximum's cycle or at the one after.
func (p *Tracker) run(ctx context.Context) {
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}
	var lastCycle, profiled, pendingCycle uint64
	pending := false
	take := func() {
		pending = false
		var buf bytes.Buffer
		if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
			return // a missed profile is retried at the next maximum
		}
		p.mu.Lock()
		p.prof = buf.Bytes()
		p.mu.Unlock()
	}
	// A GC before the start measured what came before: only later cycles
	// count (the bench parent runs one Tracker per run, in one process).
	metrics.Read(samples)
	if samples[0].Value.Kind() == metrics.KindUint64 {
		lastCycle = samples[0].Value.Uint64()
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if pending {
				take()
			}
			return
		case <-t.C:
		}
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 || samples[1].Value.Kind() != metrics.KindUint64 {
			return // not in this runtime: nothing to follow
		}
		cycle, live := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		if cycle == lastCycle {
			continue
		}
		lastCycle = cycle
		if pending && cycle > pendingCycle {
			take()
		}
		p.mu.Lock()
		grew := live > p.live
		if grew {
			p.live = live
		}
		p.mu.Unlock()
		if grew && p.profile && float64(live) >= float64(profiled)*profileStep {
			pending, pendingCycle, profiled = true, cycle, live
		}
	}
}

// Max is the largest live heap seen after a GC.
func (p *Tracker) Max() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// WriteProfile writes the profile taken at the largest live heap to path;
// it writes nothing when no profile was taken (no GC ran while sampling).
func (p *Tracker) WriteProfile(path string) error {
	p.mu.Lock()
	prof := p.prof
	p.mu.Unlock()
	if prof == nil {
		return nil // no GC ran while sampling: nothing was measured
	}
	if err := os.WriteFile(path, prof, 0o644); err != nil {
		return fmt.Errorf("peakheap: write profile: %w", err)
	}
	return nil
}

// Start runs a Tracker on a goroutine of its own until ctx is done or stop
// is called; stop returns once that goroutine has ended, after which Max and
// WriteProfile give the final figures.
func Start(ctx context.Context, profile bool) (t *Tracker, stop func()) {
	t = &Tracker{profile: profile}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.run(ctx)
	}()
	return t, func() {
		cancel()
		<-done
	}
}
