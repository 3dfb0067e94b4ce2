package controlplane

// No kubelet runs, so these helpers play its part: they register nodes and report pod status the
// way a kubelet would, which is all the EndpointSlice controller looks at. Pod IPs are data only:
// nothing listens on them and tests must never send traffic to them.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels the helpers set on nodes, as a kubelet and cloud provider would.
const (
	LabelZone     = "topology.kubernetes.io/zone"
	LabelHostname = "kubernetes.io/hostname"
)

// ContainerName is the single container of pods made by CreatePod.
const ContainerName = "app"

// CreateNamespace creates a namespace.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := cp.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return ns, nil
}

// CreateNode registers a Ready node labelled with its zone (topology.kubernetes.io/zone, skipped
// when zone is "") and hostname, with 4 CPUs allocatable so topology-aware hints can weigh it.
func (cp *ControlPlane) CreateNode(ctx context.Context, name, zone string) (*corev1.Node, error) {
	labels := map[string]string{LabelHostname: name}
	if zone != "" {
		labels[LabelZone] = zone
	}
	node, err := cp.client.CoreV1().Nodes().Create(ctx,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating node %s: %w", name, err)
	}
	now := metav1.Now()
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}},
	}
	node, err = cp.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("setting the status of node %s: %w", name, err)
	}
	return node, nil
}

// CreatePod creates a pod bound to node (as if scheduled there) with one container, ContainerName,
// exposing ports. Until SetPodStatus it is Pending with no IP, so no endpoint lists it.
func (cp *ControlPlane) CreatePod(ctx context.Context, ns, name, node string, labels map[string]string, ports []corev1.ContainerPort) (*corev1.Pod, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name:  ContainerName,
				Image: "deltaeds.invalid/test-app:1",
				Ports: ports,
			}},
		},
	}
	pod, err := cp.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

// SetPodStatus reports the pod as a kubelet would once its container runs: phase Running, podIP
// and podIPs set to ip, and the Ready and ContainersReady conditions (and the container's ready
// flag) set to ready. It patches the status subresource, so it works on terminating pods too
// (a deleted pod stays terminating until DeletePod with grace 0).
func (cp *ControlPlane) SetPodStatus(ctx context.Context, ns, name, ip string, ready bool) (*corev1.Pod, error) {
	now := metav1.Now()
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	status := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    ContainerName,
			Image:   "deltaeds.invalid/test-app:1",
			ImageID: "deltaeds.invalid/test-app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
			Ready:   ready,
			Started: &[]bool{true}[0],
			State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	// A strategic merge patch: conditions merge by type, the rest is replaced.
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return nil, fmt.Errorf("encoding the status of pod %s/%s: %w", ns, name, err)
	}
	pod, err := cp.client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("setting the status of pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

// DeletePod deletes a pod with a grace period, rounded up to whole seconds. With grace > 0 the pod
// stays terminating (no kubelet finishes it): its endpoint turns ready=false, serving=<Ready>,
// terminating=true, as while a rolling update drains it. grace 0 force-deletes it at once.
func (cp *ControlPlane) DeletePod(ctx context.Context, ns, name string, grace time.Duration) error {
	secs := int64((grace + time.Second - 1) / time.Second)
	if grace <= 0 {
		secs = 0
	}
	err := cp.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &secs})
	if err != nil {
		return fmt.Errorf("deleting pod %s/%s (grace %ds): %w", ns, name, secs, err)
	}
	return nil
}
