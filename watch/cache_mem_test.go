package watch_test

import (
	"runtime"
	"testing"

	"github.com/deltaeds/deltaeds/translate"
)

// TestServiceCacheMemory logs what a ServiceCache of the 10,000-endpoint,
// two-port Service of BenchmarkOneEndpointChange holds, per endpoint, on
// top of the slices: the figure watch's cacheMinEndpoints weighs.
func TestServiceCacheMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 10,000-endpoint Service")
	}
	in := rollingService(100, 100)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	c := translate.NewServiceCache("ns", "web")
	res := c.Translate(in, translate.Options{})
	res = translate.Result{} // the cache alone: the result shares its pieces
	after := heap()
	runtime.KeepAlive(c)
	runtime.KeepAlive(in)
	_ = res
	t.Logf("ServiceCache of 10,000 endpoints x 2 ports: %.1f MB, %d bytes per endpoint", float64(after-before)/1e6, (after-before)/10000)
}
