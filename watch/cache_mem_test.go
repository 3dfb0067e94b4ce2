package watch_test

import (
	"runtime"
	"testing"

	"github.com/deltaeds/deltaeds/translate"
)

// BenchmarkServiceCacheMemory reports what a ServiceCache of the
// 10,000-endpoint, two-port Service of BenchmarkOneEndpointChange holds, per
// endpoint, on top of the slices: the figure watch's cacheMinEndpoints
// weighs. Run it with -benchtime=1x; the heap is measured around one build.
func BenchmarkServiceCacheMemory(b *testing.B) {
	in := rollingService(100, 100)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var held uint64
	for b.Loop() {
		before := heap()
		c := translate.NewServiceCache("ns", "web")
		// The result is dropped: what stays is the cache alone (the result
		// only shares its pieces).
		_ = c.Translate(in, translate.Options{})
		after := heap()
		runtime.KeepAlive(c)
		if after > before {
			held = after - before
		}
	}
	runtime.KeepAlive(in)
	b.ReportMetric(float64(held)/1e6, "MB-held")
	b.ReportMetric(float64(held)/10000, "B-held/endpoint")
}
