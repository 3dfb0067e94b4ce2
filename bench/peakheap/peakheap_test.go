package peakheap

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestTracker keeps a large allocation live across a GC and then drops it:
// the maximum stays at least its size after it is freed, and the profile
// written is the one taken at that maximum.
func TestTracker(t *testing.T) {
	const size = 64 << 20
	p, stop := Start(context.Background(), true)
	defer stop()

	big := make([]byte, size)
	for i := range big {
		big[i] = byte(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Max() < size {
		if time.Now().After(deadline) {
			t.Fatalf("live heap maximum %d B after a GC with %d B live, want at least that", p.Max(), size)
		}
		runtime.GC()
		time.Sleep(5 * pollInterval)
	}
	runtime.KeepAlive(big)
	big = nil
	runtime.GC()
	time.Sleep(5 * pollInterval)
	if got := p.Max(); got < size {
		t.Fatalf("maximum fell to %d B once the allocation was freed, want it kept at >= %d", got, size)
	}

	stop()
	path := filepath.Join(t.TempDir(), "peak.heap.pprof")
	if err := p.WriteProfile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) { // pprof profiles are gzipped protobuf
		t.Fatalf("peak profile is not a gzipped pprof profile: % x", b[:min(len(b), 8)])
	}
}

// TestNoProfile: without a profile asked for, nothing is written.
func TestNoProfile(t *testing.T) {
	p := &Tracker{}
	path := filepath.Join(t.TempDir(), "none.pprof")
	if err := p.WriteProfile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("profile written with none taken: stat err %v", err)
	}
}

// TestTrackerIgnoresEarlierCycles: what the last GC before the start found
// live is not the tracker's: a tracker started after a large heap was freed
// and collected does not report it.
func TestTrackerIgnoresEarlierCycles(t *testing.T) {
	const size = 128 << 20
	big := make([]byte, size)
	for i := range big {
		big[i] = byte(i)
	}
	runtime.GC() // live: at least size
	runtime.KeepAlive(big)
	big = nil

	p, stop := Start(context.Background(), false)
	defer stop()
	time.Sleep(5 * pollInterval)
	if got := p.Max(); got >= size {
		t.Fatalf("maximum %d B comes from a GC before the start (live then >= %d B)", got, size)
	}
	// The allocation is garbage now: the cycles from here count, without it.
	deadline := time.Now().Add(30 * time.Second)
	for p.Max() == 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(5 * pollInterval)
	}
	stop()
	if got := p.Max(); got == 0 || got >= size {
		t.Fatalf("maximum %d B after one GC with the allocation freed; want a figure below %d B", got, size)
	}
}
