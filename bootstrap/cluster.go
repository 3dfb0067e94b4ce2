package bootstrap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/deltaeds/deltaeds/translate"
)

// listPageSize is how many EndpointSlices one List request of --from-cluster
// asks for.
const listPageSize = 500

// kubeRequestTimeout bounds each request of --from-cluster, so that an API
// server that accepts connections but never answers is an error, not a hang.
const kubeRequestTimeout = 30 * time.Second

// ClusterQuery says which EndpointSlices ListClusters reads: the same
// selection as `deltaeds serve --namespace ... --label-selector ...`.
type ClusterQuery struct {
	// Namespaces to list; empty means all.
	Namespaces []string
	// LabelSelector restricts the EndpointSlices listed (server side); ""
	// means every one.
	LabelSelector string
	// ServiceProxyName is serve's --service-proxy-name: "" skips Services
	// handed to another proxy, a name lists exactly those handed to it.
	ServiceProxyName string
}

// ListClusters lists the EndpointSlices q selects and returns the clusters
// deltaeds serve would publish for them (ClustersFromSlices), sorted by name,
// and how many Services the slices belong to. Errors name the namespace and
// what was asked; a Forbidden one says which permission is missing.
func ListClusters(ctx context.Context, client kubernetes.Interface, q ClusterQuery) ([]Cluster, int, error) {
	selector, err := translate.ServedSelector(q.LabelSelector, q.ServiceProxyName)
	if err != nil {
		return nil, 0, err
	}
	namespaces := q.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var all []*discoveryv1.EndpointSlice
	for _, ns := range namespaces {
		opts := metav1.ListOptions{LabelSelector: selector, Limit: listPageSize}
		for {
			list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, opts)
			if err != nil {
				where := "in all namespaces"
				if ns != metav1.NamespaceAll {
					where = fmt.Sprintf("in namespace %q", ns)
				}
				if apierrors.IsForbidden(err) {
					return nil, 0, fmt.Errorf("list EndpointSlices %s: permission denied (the identity needs list on endpointslices.discovery.k8s.io): %w", where, err)
				}
				return nil, 0, fmt.Errorf("list EndpointSlices %s: %w", where, err)
			}
			for i := range list.Items {
				all = append(all, &list.Items[i])
			}
			if list.Continue == "" {
				break
			}
			opts.Continue = list.Continue
		}
	}
	clusters, services := ClustersFromSlices(all)
	return clusters, services, nil
}

// ClustersFromSlices returns one Cluster per Service port that `deltaeds
// serve` publishes a CLA for, given the EndpointSlices it watches: the names
// are exactly those translate.Service gives (NAMESPACE/SERVICE/PORT, or
// NAMESPACE/SERVICE for the unnamed port; ports come from the slices, so a
// Service without slices has none). Slices without the
// kubernetes.io/service-name label are ignored, as serve ignores them. The
// result is sorted by name and has no duplicates; services is how many
// distinct Services the labelled slices belong to.
func ClustersFromSlices(endpointSlices []*discoveryv1.EndpointSlice) (clusters []Cluster, services int) {
	type key struct{ namespace, service string }
	byService := make(map[key][]*discoveryv1.EndpointSlice)
	for _, s := range endpointSlices {
		if s == nil || s.Labels[translate.ServiceNameLabel] == "" {
			continue
		}
		k := key{s.Namespace, s.Labels[translate.ServiceNameLabel]}
		byService[k] = append(byService[k], s)
	}
	for k, ss := range byService {
		for _, cla := range translate.Service(k.namespace, k.service, ss, translate.Options{}).CLAs {
			ns, svc, port, ok := translate.ParseClusterName(cla.GetClusterName())
			if !ok {
				continue // translate never publishes such a name
			}
			clusters = append(clusters, Cluster{Namespace: ns, Service: svc, Port: port})
		}
	}
	return UnionClusters(clusters), len(byService)
}

// UnionClusters returns the clusters of every list once each, sorted by
// name (Cluster.Name).
func UnionClusters(lists ...[]Cluster) []Cluster {
	seen := make(map[string]bool)
	var out []Cluster
	for _, l := range lists {
		for _, c := range l {
			if n := c.Name(); !seen[n] {
				seen[n] = true
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b Cluster) int { return cmp.Compare(a.Name(), b.Name()) })
	return out
}

// CheckExcludePatterns reports the first malformed pattern of --exclude.
func CheckExcludePatterns(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("--exclude %q: %w", p, err)
		}
	}
	return nil
}

// ExcludeClusters returns the clusters whose name matches none of patterns,
// in their order. A pattern is a path.Match glob on the cluster name, so "*"
// does not cross "/": "kube-system/*" matches the unnamed ports of
// kube-system, "kube-system/*/*" its named ones. It fails on a malformed
// pattern.
func ExcludeClusters(clusters []Cluster, patterns []string) ([]Cluster, error) {
	if err := CheckExcludePatterns(patterns); err != nil {
		return nil, err
	}
	var out []Cluster
next:
	for _, c := range clusters {
		for _, p := range patterns {
			if ok, _ := path.Match(p, c.Name()); ok {
				continue next
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// fromClusterFlags are the flags of --from-cluster; Command appends them.
func fromClusterFlags() []cli.Flag {
	const cat = "From the cluster:"
	return []cli.Flag{
		&cli.BoolFlag{Category: cat, Name: "from-cluster", EnvVars: env("from-cluster"),
			Usage: "also add an EDS cluster for every Service port found in the cluster's EndpointSlices, named as deltaeds serve publishes it (output sorted by name)"},
		&cli.StringFlag{Category: cat, Name: "kubeconfig", EnvVars: env("kubeconfig"),
			DefaultText: "in-cluster config, else $KUBECONFIG, else ~/.kube/config",
			Usage:       "with --from-cluster, reach the API server with this kubeconfig `FILE`"},
		&cli.StringSliceFlag{Category: cat, Name: "namespace", EnvVars: env("namespace"), DefaultText: "all namespaces",
			Usage: "with --from-cluster, list only this `NAMESPACE` (repeatable; comma-separated in the environment)"},
		&cli.StringFlag{Category: cat, Name: "label-selector", EnvVars: env("label-selector"), DefaultText: "every EndpointSlice",
			Usage: "with --from-cluster, list only the EndpointSlices matching this label `SELECTOR`"},
		&cli.StringFlag{Category: cat, Name: "service-proxy-name", EnvVars: env("service-proxy-name"), DefaultText: "none, as serve",
			Usage: "with --from-cluster, as serve's --service-proxy-name: list the Services labelled service.kubernetes.io/service-proxy-name=`NAME` (by default those without the label)"},
		&cli.StringSliceFlag{Category: cat, Name: "exclude", EnvVars: env("exclude"),
			Usage: "with --from-cluster, leave out the clusters found whose name matches this glob `PATTERN` (Go path.Match: * does not cross /, so ns/* is the unnamed ports of ns and ns/*/* its named ones; repeatable; --cluster ones are always kept)"},
	}
}

// fromClusterQuery reads and checks the --from-cluster flags. It returns
// ok=false without --from-cluster, and an error (a usage error) when one of
// its flags is given without it or is malformed.
func fromClusterQuery(c *cli.Context) (q ClusterQuery, excludes []string, ok bool, err error) {
	if !c.Bool("from-cluster") {
		for _, f := range []string{"kubeconfig", "namespace", "label-selector", "service-proxy-name", "exclude"} {
			if c.IsSet(f) {
				return q, nil, false, fmt.Errorf("--%s needs --from-cluster", f)
			}
		}
		return q, nil, false, nil
	}
	if q, err = parseClusterQuery(c); err != nil {
		return q, nil, false, err
	}
	for _, p := range c.StringSlice("exclude") {
		if p = strings.TrimSpace(p); p != "" {
			excludes = append(excludes, p)
		}
	}
	if err := CheckExcludePatterns(excludes); err != nil {
		return q, nil, false, err
	}
	return q, excludes, true, nil
}

// parseClusterQuery reads --namespace and --label-selector.
func parseClusterQuery(c *cli.Context) (ClusterQuery, error) {
	var q ClusterQuery
	for _, ns := range c.StringSlice("namespace") {
		ns = strings.TrimSpace(ns)
		if ns == "" || slices.Contains(q.Namespaces, ns) {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return q, fmt.Errorf("--namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		q.Namespaces = append(q.Namespaces, ns)
	}
	q.LabelSelector = strings.TrimSpace(c.String("label-selector"))
	if q.LabelSelector != "" {
		if _, err := labels.Parse(q.LabelSelector); err != nil {
			return q, fmt.Errorf("--label-selector %q: %v", q.LabelSelector, err)
		}
	}
	q.ServiceProxyName = strings.TrimSpace(c.String("service-proxy-name"))
	if _, err := translate.ServedSelector("", q.ServiceProxyName); err != nil {
		return q, fmt.Errorf("--service-proxy-name: %v", err)
	}
	return q, nil
}

// addClustersFromCluster implements --from-cluster: it lists the clusters
// and returns opts with its Clusters replaced by the union, sorted by name,
// of the --cluster ones and those found, less the excluded. Flag errors are
// usage errors (ExitUsage); failing to reach or read the API server is a
// plain error (exit 1). Without --from-cluster it returns opts unchanged.
func addClustersFromCluster(c *cli.Context, opts Options) (Options, error) {
	q, excludes, ok, err := fromClusterQuery(c)
	if err != nil {
		return opts, usage("%v", err)
	}
	if !ok {
		return opts, nil
	}
	found, services, err := listFromKubeconfig(c, q)
	if err != nil {
		return opts, fmt.Errorf("bootstrap: --from-cluster: %w", err)
	}
	kept, err := ExcludeClusters(found, excludes)
	if err != nil {
		return opts, usage("%v", err) // checked above; kept for safety
	}
	w := c.App.ErrWriter
	if w == nil {
		w = os.Stderr
	}
	switch {
	case services == 0:
		fmt.Fprintf(w, "deltaeds bootstrap: warning: --from-cluster found no Services (no EndpointSlice labelled %s in %s%s)\n",
			translate.ServiceNameLabel, describeNamespaces(q.Namespaces), describeSelector(q.LabelSelector))
	case len(found) == 0:
		fmt.Fprintf(w, "deltaeds bootstrap: warning: --from-cluster found %d Services but no port deltaeds serves (FQDN slices, SCTP or unnumbered ports only)\n", services)
	case len(kept) == 0:
		fmt.Fprintf(w, "deltaeds bootstrap: warning: --exclude left out all %d clusters --from-cluster found\n", len(found))
	}
	opts.Clusters = UnionClusters(opts.Clusters, kept)
	return opts, nil
}

// listFromKubeconfig lists the clusters of q from the API server --kubeconfig
// reaches (see LoadKubeconfig). Errors name the server and the config's source.
func listFromKubeconfig(c *cli.Context, q ClusterQuery) ([]Cluster, int, error) {
	restConfig, source, err := LoadKubeconfig(c.String("kubeconfig"))
	if err != nil {
		return nil, 0, err
	}
	restConfig = rest.CopyConfig(restConfig)
	restConfig.Timeout = kubeRequestTimeout
	restConfig.UserAgent = "deltaeds-bootstrap"
	httpClient, err := rest.HTTPClientFor(restConfig)
	if err != nil {
		return nil, 0, fmt.Errorf("kubernetes client (%s): %w", source, err)
	}
	defer httpClient.CloseIdleConnections()
	client, err := kubernetes.NewForConfigAndClient(restConfig, httpClient)
	if err != nil {
		return nil, 0, fmt.Errorf("kubernetes client (%s): %w", source, err)
	}
	found, services, err := ListClusters(c.Context, client, q)
	if err != nil {
		return nil, 0, fmt.Errorf("API server %s (%s): %w", restConfig.Host, source, err)
	}
	return found, services, nil
}

func describeNamespaces(ns []string) string {
	if len(ns) == 0 {
		return "any namespace"
	}
	return "namespaces " + strings.Join(ns, ", ")
}

func describeSelector(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(" matching %q", s)
}

// LoadKubeconfig resolves the API server's configuration the way every
// deltaeds command does (`serve` uses it too): the given file, else the
// in-cluster service account, else $KUBECONFIG, else ~/.kube/config. It
// returns where it came from, for logs and errors.
func LoadKubeconfig(file string) (*rest.Config, string, error) {
	if file != "" {
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: file}, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %s: %w", file, err)
		}
		return cfg, "--kubeconfig " + file, nil
	}
	cfg, err := rest.InClusterConfig()
	if err == nil {
		return cfg, "in-cluster config", nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", fmt.Errorf("in-cluster kubeconfig: %w", err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules() // $KUBECONFIG, else ~/.kube/config
	cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", errors.New("no kubeconfig: not running in a cluster, $KUBECONFIG is unset and ~/.kube/config is missing; pass --kubeconfig")
		}
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return cfg, "$KUBECONFIG " + env, nil
	}
	return cfg, clientcmd.RecommendedHomeFile, nil
}
