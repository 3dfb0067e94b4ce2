package kubeaccess_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/kubeaccess"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func obj(apiVersion, kind, namespace, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind}}
	for k, v := range fields {
		u.Object[k] = v
	}
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

// A ServiceAccount bound to a Role that reads Pods in its namespace: a
// dry-run stores nothing, the applied binding is waited for, and only what
// the Role grants is allowed.
func TestApplyAndReview(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(t, controlplane.Options{})
	a, err := kubeaccess.NewApplier(cp.RESTConfig(), "kubeaccess-test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig())

	ns := obj("v1", "Namespace", "", "team", nil)
	if err := a.Apply(ctx, ns, true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, "team", metav1.GetOptions{}); err == nil {
		t.Fatal("a dry-run created the namespace")
	}
	for _, u := range []*unstructured.Unstructured{
		ns,
		obj("v1", "ServiceAccount", "team", "reader", nil),
		obj("rbac.authorization.k8s.io/v1", "Role", "team", "pods", map[string]any{"rules": []any{
			map[string]any{"apiGroups": []any{""}, "resources": []any{"pods"}, "verbs": []any{"get", "list"}}}}),
		obj("rbac.authorization.k8s.io/v1", "RoleBinding", "team", "pods", map[string]any{
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}}}),
	} {
		if err := a.Apply(ctx, u, false); err != nil {
			t.Fatal(err)
		}
	}
	// Strict field validation: an unknown field is refused.
	bad := obj("v1", "ServiceAccount", "team", "typo", map[string]any{"secretz": []any{}})
	if err := a.Apply(ctx, bad, true); err == nil {
		t.Error("an object with an unknown field was accepted")
	}

	r := kubeaccess.ServiceAccount(client, "team", "reader")
	if r.User() != "system:serviceaccount:team:reader" {
		t.Errorf("User() = %q", r.User())
	}
	listPods := kubeaccess.Access{Verb: "list", Resource: "pods", Namespace: "team"}
	missing, err := r.WaitGranted(ctx, []kubeaccess.Access{listPods}, 30*time.Second)
	if err != nil || len(missing) != 0 {
		t.Fatalf("WaitGranted(list pods) = %v, %v; want granted", missing, err)
	}
	deletePods := kubeaccess.Access{Verb: "delete", Resource: "pods", Namespace: "team"}
	if ok, err := r.Allowed(ctx, deletePods); err != nil || ok {
		t.Errorf("Allowed(delete pods) = %v, %v; want denied", ok, err)
	}
	otherNS := kubeaccess.Access{Verb: "list", Resource: "pods", Namespace: "default"}
	missing, err = r.WaitGranted(ctx, []kubeaccess.Access{listPods, otherNS}, 300*time.Millisecond)
	if err != nil || len(missing) != 1 || missing[0] != otherNS {
		t.Errorf("WaitGranted(list pods here and in default) = %v, %v; want %v missing", missing, err, otherNS)
	}

	// A throttled client (as under load, when client-go's rate limiter
	// makes a review wait past the timeout) still gets a complete round's
	// answer, not an error.
	slowCfg := cp.RESTConfig()
	slowCfg.QPS, slowCfg.Burst = 1, 1
	slow := kubeaccess.ServiceAccount(kubernetes.NewForConfigOrDie(slowCfg), "team", "reader")
	missing, err = slow.WaitGranted(ctx, []kubeaccess.Access{listPods, otherNS, deletePods}, 300*time.Millisecond)
	if err != nil || len(missing) != 2 || missing[0] != otherNS || missing[1] != deletePods {
		t.Errorf("throttled WaitGranted = %v, %v; want %v and %v missing", missing, err, otherNS, deletePods)
	}
}
