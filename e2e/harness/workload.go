package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/deltaeds/deltaeds/internal/controlplane"
)

// podNetwork is where pod IPs come from: 10.64.0.0/10, away from the Service range
// (10.0.0.0/24). Nothing listens on these addresses and nothing may send traffic to them.
var podNetwork = netip.MustParsePrefix("10.64.0.0/10")

// Node is a registered node and its zone.
type Node struct {
	Name, Zone string
}

// Cluster plays the kubelet (and, in Deployment, the Deployment controller) against a control
// plane: it registers zoned nodes, hands out pod IPs and makes pods ready. Safe for concurrent
// use.
type Cluster struct {
	CP     *controlplane.ControlPlane
	Client kubernetes.Interface

	nextIP atomic.Uint32
	mu     sync.Mutex
	nodes  []Node
}

// NewCluster wraps a running control plane.
func NewCluster(cp *controlplane.ControlPlane) *Cluster {
	return &Cluster{CP: cp, Client: cp.Client()}
}

// AddNodes registers perZone nodes in each zone, named "<zone>-<i>".
func (c *Cluster) AddNodes(ctx context.Context, zones []string, perZone int) error {
	for _, z := range zones {
		for i := range perZone {
			name := fmt.Sprintf("%s-%d", z, i)
			if _, err := c.CP.CreateNode(ctx, name, z); err != nil {
				return fmt.Errorf("harness: %w", err)
			}
			c.mu.Lock()
			c.nodes = append(c.nodes, Node{Name: name, Zone: z})
			c.mu.Unlock()
		}
	}
	return nil
}

// Nodes returns the registered nodes, in registration order.
func (c *Cluster) Nodes() []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// NodeZone returns the zone of a registered node.
func (c *Cluster) NodeZone(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.Name == name {
			return n.Zone
		}
	}
	return ""
}

// AllocIP returns a pod IP never handed out before by this Cluster.
func (c *Cluster) AllocIP() string {
	n := c.nextIP.Add(1)
	a := podNetwork.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// ServicePort is one port of a Service and the container port it targets.
type ServicePort struct {
	Name       string
	Port       int32
	TargetPort int32
	Protocol   corev1.Protocol // "" is TCP
}

// CreateService creates a ClusterIP Service. A nil selector makes a Service without selector,
// whose EndpointSlices the caller writes.
func (c *Cluster) CreateService(ctx context.Context, ns, name string, selector map[string]string, ports []ServicePort) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: selector},
	}
	for _, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Port: p.Port, TargetPort: intstr.FromInt32(p.TargetPort), Protocol: proto,
		})
	}
	out, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("harness: creating Service %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// DeleteService deletes a Service; the garbage collector then deletes its EndpointSlices.
func (c *Cluster) DeleteService(ctx context.Context, ns, name string) error {
	if err := c.Client.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("harness: deleting Service %s/%s: %w", ns, name, err)
	}
	return nil
}

// Pod is one pod of a Deployment as the harness knows it.
type Pod struct {
	Name, IP, Node, Zone string
	Revision             int
}

// DeploymentSpec describes pods to run behind a Service.
type DeploymentSpec struct {
	Namespace, Name string
	Replicas        int
	// Ports are the container ports (named as the Service's target ports, if wanted).
	Ports []corev1.ContainerPort
	// Labels selects the pods (the Service's selector); default app=<Name>.
	Labels map[string]string
	// Parallel bounds concurrent API calls (default 8).
	Parallel int
}

// Deployment is a set of pods that the harness creates, makes ready and replaces as the
// Deployment and ReplicaSet controllers and the kubelet would. Not safe for concurrent use,
// except Pods.
type Deployment struct {
	c    *Cluster
	spec DeploymentSpec

	mu   sync.Mutex
	rev  int
	pods map[string]Pod // live (not terminating) pods by name
	seq  int
}

// Deploy creates spec.Replicas pods spread over the nodes round-robin and reports each Running
// and Ready, as the kubelet would once its readiness probe passes.
func (c *Cluster) Deploy(ctx context.Context, spec DeploymentSpec) (*Deployment, error) {
	if spec.Labels == nil {
		spec.Labels = map[string]string{"app": spec.Name}
	}
	if spec.Parallel <= 0 {
		spec.Parallel = 8
	}
	if len(c.Nodes()) == 0 {
		return nil, errors.New("harness: Deploy: no nodes (call AddNodes first)")
	}
	d := &Deployment{c: c, spec: spec, rev: 1, pods: make(map[string]Pod)}
	pods := d.newPods(spec.Replicas)
	if err := d.createReady(ctx, pods, nil, nil); err != nil {
		return nil, err
	}
	return d, nil
}

// Labels returns the pods' labels, for the Service's selector.
func (d *Deployment) Labels() map[string]string { return d.spec.Labels }

// Pods returns the live pods (not terminating), sorted by name.
func (d *Deployment) Pods() []Pod {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Pod, 0, len(d.pods))
	for _, p := range d.pods {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// IPs returns the IPs of the live pods, sorted.
func (d *Deployment) IPs() []string {
	var ips []string
	for _, p := range d.Pods() {
		ips = append(ips, p.IP)
	}
	return SortIPs(ips)
}

func (d *Deployment) newPods(n int) []Pod {
	d.mu.Lock()
	defer d.mu.Unlock()
	nodes := d.c.Nodes()
	out := make([]Pod, n)
	for i := range out {
		node := nodes[d.seq%len(nodes)]
		out[i] = Pod{
			Name:     fmt.Sprintf("%s-r%d-%d", d.spec.Name, d.rev, d.seq),
			IP:       d.c.AllocIP(),
			Node:     node.Name,
			Zone:     node.Zone,
			Revision: d.rev,
		}
		d.seq++
	}
	return out
}

// createReady creates pods and then marks each Running and Ready, reporting events to observe.
func (d *Deployment) createReady(ctx context.Context, pods []Pod, observe, made func(Event)) error {
	labels := make(map[string]string, len(d.spec.Labels)+1)
	for k, v := range d.spec.Labels {
		labels[k] = v
	}
	return Parallel(ctx, d.spec.Parallel, len(pods), func(ctx context.Context, i int) error {
		p := pods[i]
		l := make(map[string]string, len(labels)+1)
		for k, v := range labels {
			l[k] = v
		}
		l["deltaeds.test/revision"] = fmt.Sprint(p.Revision)
		if _, err := d.c.CP.CreatePod(ctx, d.spec.Namespace, p.Name, p.Node, l, d.spec.Ports); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		if observe != nil {
			observe(Event{Kind: PodReady, Service: d.spec.Name, Pod: p, At: time.Now()})
		}
		if _, err := d.c.CP.SetPodStatus(ctx, d.spec.Namespace, p.Name, p.IP, true); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		if made != nil {
			made(Event{Kind: PodReady, Service: d.spec.Name, Pod: p, At: time.Now()})
		}
		d.mu.Lock()
		d.pods[p.Name] = p
		d.mu.Unlock()
		return nil
	})
}

// SetReady reports a live pod's readiness, as the kubelet would when its probe flips.
func (d *Deployment) SetReady(ctx context.Context, pod Pod, ready bool) error {
	if _, err := d.c.CP.SetPodStatus(ctx, d.spec.Namespace, pod.Name, pod.IP, ready); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Drain deletes a live pod with a grace period: it stays terminating (serving while it was
// ready) until Remove, as a pod whose kubelet is still running its preStop hook.
func (d *Deployment) Drain(ctx context.Context, pod Pod) error {
	if err := d.c.CP.DeletePod(ctx, d.spec.Namespace, pod.Name, time.Hour); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	d.mu.Lock()
	delete(d.pods, pod.Name)
	d.mu.Unlock()
	return nil
}

// Remove force-deletes a pod (live or draining), as the kubelet does once its containers exit.
func (d *Deployment) Remove(ctx context.Context, pod Pod) error {
	if err := d.c.CP.DeletePod(ctx, d.spec.Namespace, pod.Name, 0); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("harness: %w", err)
	}
	d.mu.Lock()
	delete(d.pods, pod.Name)
	d.mu.Unlock()
	return nil
}

// Scale adds n ready pods of the current revision.
func (d *Deployment) Scale(ctx context.Context, n int) ([]Pod, error) {
	pods := d.newPods(n)
	return pods, d.createReady(ctx, pods, nil, nil)
}

// EventKind is what happened to a pod during a rollout.
type EventKind int

// The pod events a rollout reports.
const (
	// PodReady: a new pod is reported Running and Ready; its endpoint becomes ready.
	PodReady EventKind = iota + 1
	// PodTerminating: an old pod is deleted with a grace period; its endpoint turns
	// serving and terminating.
	PodTerminating
	// PodGone: a draining pod is force-deleted; its endpoint goes away.
	PodGone
)

func (k EventKind) String() string {
	switch k {
	case PodReady:
		return "ready"
	case PodTerminating:
		return "terminating"
	case PodGone:
		return "gone"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one pod change made by a rollout.
type Event struct {
	Kind    EventKind
	Service string // the Deployment's name
	Pod     Pod
	At      time.Time
}

// RolloutOptions shapes a rolling restart.
type RolloutOptions struct {
	// MaxSurge and MaxUnavailable are pod counts, as a Deployment's strategy resolves them
	// (25% of 100 is 25).
	MaxSurge, MaxUnavailable int
	// DrainFor is how long a replaced pod stays terminating before it is force-deleted.
	DrainFor time.Duration
	// StepPause is waited between steps, like minReadySeconds (default none).
	StepPause time.Duration
	// Observe, if set, is told about every pod change just before it is made (At is then), and
	// Made once the API call that made it returned (At is then). They may be called from several
	// goroutines at once.
	Observe, Made func(Event)
	// Progress, if set, is called after each step with the pods replaced so far.
	Progress func(replaced, total int)
}

// RollingRestart replaces every pod with one of a new revision the way the Deployment
// controller does with the given maxSurge and maxUnavailable: it creates new pods while the
// total stays within replicas+maxSurge, and deletes old ones (with a grace period, so they
// drain as terminating endpoints) while the available pods stay at or above
// replicas-maxUnavailable. The kubelet part is immediate: new pods are Running and Ready as soon
// as they exist. Draining pods are force-deleted after DrainFor. It returns when only new pods
// remain and no pod is draining.
func (d *Deployment) RollingRestart(ctx context.Context, o RolloutOptions) error {
	if o.MaxSurge <= 0 && o.MaxUnavailable <= 0 {
		return errors.New("harness: RollingRestart: maxSurge and maxUnavailable cannot both be 0")
	}
	d.mu.Lock()
	d.rev++
	rev := d.rev
	var old []Pod
	for _, p := range d.pods {
		if p.Revision < rev {
			old = append(old, p)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(old, func(a, b Pod) int { return strings.Compare(a.Name, b.Name) })
	replicas := d.spec.Replicas
	total := len(old)

	type draining struct {
		pod   Pod
		until time.Time
	}
	var drains []draining
	removeDrained := func(all bool) error {
		now := time.Now()
		var due []Pod
		keep := drains[:0]
		for _, dr := range drains {
			if all || !now.Before(dr.until) {
				due = append(due, dr.pod)
			} else {
				keep = append(keep, dr)
			}
		}
		drains = keep
		return Parallel(ctx, d.spec.Parallel, len(due), func(ctx context.Context, i int) error {
			if o.Observe != nil {
				o.Observe(Event{Kind: PodGone, Service: d.spec.Name, Pod: due[i], At: time.Now()})
			}
			if err := d.Remove(ctx, due[i]); err != nil {
				return err
			}
			if o.Made != nil {
				o.Made(Event{Kind: PodGone, Service: d.spec.Name, Pod: due[i], At: time.Now()})
			}
			return nil
		})
	}

	newCount, replaced := 0, 0
	for len(old) > 0 || newCount < replicas {
		// Scale up the new revision within the surge. Pods already deleted (draining) no
		// longer count, as the ReplicaSet controller does not count terminating pods.
		up := min(replicas+o.MaxSurge-(len(old)+newCount), replicas-newCount)
		if up > 0 {
			pods := d.newPodsAt(up, rev)
			if err := d.createReady(ctx, pods, o.Observe, o.Made); err != nil {
				return err
			}
			newCount += up
		}
		// Scale down the old revision while enough pods stay available. Every live pod is
		// ready here, so available = live old + new.
		down := min(len(old), len(old)+newCount-(replicas-o.MaxUnavailable))
		if down > 0 {
			victims := old[:down]
			old = old[down:]
			if err := Parallel(ctx, d.spec.Parallel, len(victims), func(ctx context.Context, i int) error {
				if o.Observe != nil {
					o.Observe(Event{Kind: PodTerminating, Service: d.spec.Name, Pod: victims[i], At: time.Now()})
				}
				if err := d.Drain(ctx, victims[i]); err != nil {
					return err
				}
				if o.Made != nil {
					o.Made(Event{Kind: PodTerminating, Service: d.spec.Name, Pod: victims[i], At: time.Now()})
				}
				return nil
			}); err != nil {
				return err
			}
			for _, v := range victims {
				drains = append(drains, draining{pod: v, until: time.Now().Add(o.DrainFor)})
			}
			replaced += down
		}
		if up <= 0 && down <= 0 {
			return fmt.Errorf("harness: RollingRestart of %s made no progress (replicas %d, surge %d, unavailable %d)",
				d.spec.Name, replicas, o.MaxSurge, o.MaxUnavailable)
		}
		if err := removeDrained(false); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(replaced, total)
		}
		if o.StepPause > 0 {
			if err := sleep(ctx, o.StepPause); err != nil {
				return err
			}
		}
	}
	// Let the last pods drain for their time too.
	if len(drains) > 0 {
		if err := sleep(ctx, time.Until(drains[len(drains)-1].until)); err != nil {
			return err
		}
	}
	return removeDrained(true)
}

func (d *Deployment) newPodsAt(n, rev int) []Pod {
	pods := d.newPods(n)
	for i := range pods {
		pods[i].Revision = rev
	}
	return pods
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Parallel runs fn(ctx, i) for i in [0, n) on at most workers goroutines and returns the first
// error, after every started call has returned. The first error cancels the context the others
// see.
func Parallel(parent context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && next.Load() < int64(n) && parent.Err() != nil {
		// The parent was cancelled before every item ran.
		return parent.Err()
	}
	return firstErr
}
