package translate

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ServiceProxyNameLabel marks a Service (and, copied by the EndpointSlice
// controller, its slices) as handled by a proxy other than kube-proxy.
const ServiceProxyNameLabel = "service.kubernetes.io/service-proxy-name"

// ServedSelector returns the label selector of the EndpointSlices deltaeds
// serves: those matching selector (any when empty) and, like kube-proxy,
// none labelled ServiceProxyNameLabel when proxyName is empty, or exactly
// those labelled proxyName (a Service handed to deltaeds by name, as
// kube-proxy alternatives are) otherwise.
func ServedSelector(selector, proxyName string) (string, error) {
	sel, err := labels.Parse(strings.TrimSpace(selector))
	if err != nil {
		return "", fmt.Errorf("label selector %q: %w", selector, err)
	}
	var req *labels.Requirement
	if proxyName == "" {
		req, err = labels.NewRequirement(ServiceProxyNameLabel, selection.DoesNotExist, nil)
	} else {
		if errs := validation.IsValidLabelValue(proxyName); len(errs) > 0 {
			return "", fmt.Errorf("service proxy name %q: %s", proxyName, strings.Join(errs, "; "))
		}
		req, err = labels.NewRequirement(ServiceProxyNameLabel, selection.Equals, []string{proxyName})
	}
	if err != nil {
		return "", fmt.Errorf("service proxy name %q: %w", proxyName, err)
	}
	return sel.Add(*req).String(), nil
}
