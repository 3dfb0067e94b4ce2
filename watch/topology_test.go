package watch

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
)

// TestTopologyInputsAgainstRealAPIServer: under NodeZones a Node's zone is
// read from its label (and forgotten with the Node); under
// InternalTrafficPolicy a Service's internalTrafficPolicy is followed as it
// is created, edited and deleted, each change counted once.
func TestTopologyInputsAgainstRealAPIServer(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	if _, err := cp.CreateNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	nodes := client.CoreV1().Nodes()
	for name, zone := range map[string]string{"n1": "z1", "n2": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if zone != "" {
			n.Labels[ZoneLabel] = zone
		}
		if _, err := nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	services := client.CoreV1().Services("shop")
	service := func(name string, policy corev1.ServiceInternalTrafficPolicy) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{
				Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
				InternalTrafficPolicy: &policy,
			},
		}
	}
	if _, err := services.Create(ctx, service("local", corev1.ServiceInternalTrafficPolicyLocal), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := services.Create(ctx, service("cluster", corev1.ServiceInternalTrafficPolicyCluster), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	w, store := started(t, client, Config{NodeZones: true, InternalTrafficPolicy: true, DeletedGracePeriod: time.Hour})
	eventually(t, "sync", store.Synced)
	if w.NodeZone("n1") != "z1" || w.NodeZone("n2") != "" || w.NodeZone("n9") != "" || w.NodeZone("") != "" {
		t.Fatalf("zones n1=%q n2=%q n9=%q", w.NodeZone("n1"), w.NodeZone("n2"), w.NodeZone("n9"))
	}
	if !w.serviceLocal("shop", "shop/local") || w.serviceLocal("shop", "shop/cluster") || w.serviceLocal("shop", "shop/none") {
		t.Fatal("policies at first sync are wrong")
	}
	// The Service created Local before the start counts once.
	changes := func() float64 { return testutil.ToFloat64(w.metrics.ServicePolicyChanges) }
	if got := changes(); got != 1 {
		t.Fatalf("deltaeds_service_policy_changes_total = %v at first sync, want 1", got)
	}

	n2, err := nodes.Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2.Labels = map[string]string{ZoneLabel: "z2"}
	if _, err := nodes.Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n2's zone", func() bool { return w.NodeZone("n2") == "z2" })
	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n1 forgotten", func() bool { return w.NodeZone("n1") == "" })

	c, err := services.Get(ctx, "cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	if _, err := services.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cluster turned Local", func() bool { return w.serviceLocal("shop", "shop/cluster") })
	// An edit that leaves the policy alone is no change.
	c, err = services.Get(ctx, "cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Labels = map[string]string{"edited": "yes"}
	if _, err := services.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := services.Delete(ctx, "local", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "local deleted", func() bool { return !w.serviceLocal("shop", "shop/local") })
	if got := changes(); got != 3 {
		t.Fatalf("deltaeds_service_policy_changes_total = %v, want 3 (created Local, turned Local, deleted)", got)
	}
}
