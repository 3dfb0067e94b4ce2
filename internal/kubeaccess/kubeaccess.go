// Package kubeaccess applies objects to a kube-apiserver with server-side
// apply and asks it, with SubjectAccessReviews, what a ServiceAccount may
// do: what deploy/'s and deploy/helm's tests check their manifests with
// against the real API server of internal/controlplane.
//
// It is test infrastructure, not product API: deltaeds itself never writes
// to the API server and must never import this package.
package kubeaccess

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Applier applies objects with server-side apply and strict field
// validation, through a REST mapper made from discovery when it was made
// (so CRDs must be installed by an earlier Applier, or before NewApplier).
type Applier struct {
	httpClient   *http.Client
	mapper       meta.RESTMapper
	dyn          dynamic.Interface
	fieldManager string
}

// NewApplier returns an Applier through cfg, applying as fieldManager.
// Close releases its connections.
func NewApplier(cfg *rest.Config, fieldManager string) (*Applier, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeaccess: http client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubeaccess: discovery: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return nil, fmt.Errorf("kubeaccess: discovery: %w", err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubeaccess: dynamic client: %w", err)
	}
	return &Applier{httpClient: httpClient, mapper: restmapper.NewDiscoveryRESTMapper(groups),
		dyn: dyn, fieldManager: fieldManager}, nil
}

// Apply applies u (dryRun: with dryRun=All, so nothing is stored).
func (a *Applier) Apply(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		ri = a.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: a.fieldManager, Force: &force, FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, opts); err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// Close closes the Applier's idle connections.
func (a *Applier) Close() { a.httpClient.CloseIdleConnections() }

// Access is one thing to ask the authorizer about: a verb on a resource
// (Group "" is the core group, Namespace "" cluster-wide or every
// namespace), or a verb on a non-resource Path when Path is set.
type Access struct {
	Verb, Group, Resource, Namespace, Path string
}

// Reviewer asks the API server what one ServiceAccount may do.
type Reviewer struct {
	client kubernetes.Interface
	user   string
	groups []string
}

// ServiceAccount returns a Reviewer for the ServiceAccount namespace/name,
// with the groups the API server gives every ServiceAccount token.
func ServiceAccount(client kubernetes.Interface, namespace, name string) *Reviewer {
	return &Reviewer{client: client, user: "system:serviceaccount:" + namespace + ":" + name,
		groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
}

// User is the user name the Reviewer asks for.
func (r *Reviewer) User() string { return r.user }

// Allowed asks the API server, with a SubjectAccessReview, whether the
// ServiceAccount may do a.
func (r *Reviewer) Allowed(ctx context.Context, a Access) (bool, error) {
	spec := authorizationv1.SubjectAccessReviewSpec{User: r.user, Groups: r.groups}
	if a.Path != "" {
		spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Verb: a.Verb, Path: a.Path}
	} else {
		spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Verb: a.Verb, Group: a.Group, Resource: a.Resource, Namespace: a.Namespace}
	}
	res, err := r.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("kubeaccess: review %+v for %s: %w", a, r.user, err)
	}
	return res.Status.Allowed, nil
}

// WaitGranted waits until every access in needed is allowed, and returns
// those still denied by the first complete round of reviews after timeout
// (none when all were granted). The RBAC authorizer reads roles and
// bindings through its own informers, so a binding just applied takes
// effect a moment later: a caller judging what must be denied waits here
// first, for the positive signal that the authorizer has seen the bindings.
//
// Each round runs whole under ctx, not under the timeout: client-go's rate
// limiter fails a request at once when it predicts it cannot start before
// its context's deadline, which under load turned "still denied" into an
// error.
func (r *Reviewer) WaitGranted(ctx context.Context, needed []Access, timeout time.Duration) ([]Access, error) {
	deadline := time.Now().Add(timeout)
	var missing []Access
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		var denied []Access
		for _, a := range needed {
			ok, err := r.Allowed(ctx, a)
			if err != nil {
				return false, err
			}
			if !ok {
				denied = append(denied, a)
			}
		}
		missing = denied
		return len(denied) == 0 || !time.Now().Before(deadline), nil
	})
	if err != nil {
		return nil, fmt.Errorf("kubeaccess: wait for %d accesses: %w", len(needed), err)
	}
	return missing, nil
}
