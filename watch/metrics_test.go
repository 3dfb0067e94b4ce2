package watch

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// histogramCount returns how many observations the registry's histogram
// named name holds.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s in the registry", name)
	return 0
}

func TestWorkqueueMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	client := fake.NewClientset(slice("ns", "web-1", "web", 8080, "10.0.0.1"))
	w, store := started(t, client, Config{Metrics: NewMetrics(reg)})
	eventually(t, "sync", store.Synced)

	_, err := client.DiscoveryV1().EndpointSlices("ns").Create(context.Background(),
		slice("ns", "api-1", "api", 8080, "10.0.1.1"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new Service's CLA", func() bool { return storedCLA(t, store, "ns/api/http") != nil })
	// Done runs after the store write; wait for the queue to be idle.
	eventually(t, "an empty queue", func() bool {
		return testutil.ToFloat64(w.metrics.QueueDepth) == 0 && histogramCount(t, reg, "deltaeds_workqueue_work_duration_seconds") >= 1
	})
	if n := testutil.ToFloat64(w.metrics.QueueAdds); n < 1 {
		t.Errorf("workqueue adds = %v, want at least the new Service", n)
	}
	if n := histogramCount(t, reg, "deltaeds_workqueue_queue_duration_seconds"); n < 1 {
		t.Errorf("queue duration observations = %d", n)
	}
}
