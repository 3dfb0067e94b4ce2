package watch

import (
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/deltaeds/deltaeds/translate"
)

// ResourceUpdates carries each CLA with its encoding where the translation
// has one, and no Variants for a CLA without a Topology.
func TestResourceUpdates(t *testing.T) {
	at := time.Unix(100, 0)
	res := translate.Result{
		CLAs:    []*endpointv3.ClusterLoadAssignment{{ClusterName: "ns/a/http"}, {ClusterName: "ns/a/grpc"}},
		Encoded: [][][]byte{{[]byte("x")}},
	}
	got := ResourceUpdates(res, at)
	if len(got) != 2 || got[0].Name != "ns/a/http" || got[1].Name != "ns/a/grpc" {
		t.Fatalf("updates %+v", got)
	}
	if got[0].Encoded == nil || got[1].Encoded != nil {
		t.Errorf("encoded: %v, %v; want the first only", got[0].Encoded, got[1].Encoded)
	}
	for _, u := range got {
		if u.Variants != nil || !u.ObservedAt.Equal(at) || u.Message == nil {
			t.Errorf("%s: variants %v, observed %v, message %v", u.Name, u.Variants, u.ObservedAt, u.Message)
		}
	}
}
