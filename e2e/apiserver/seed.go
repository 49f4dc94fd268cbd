package apiserver

import (
	"context"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Seed is what a simulated workload cluster holds: its KEP-2149 identity, one exported
// InferencePool, a ready Pod per model-server endpoint and InferenceObjectives for the pool.
type Seed struct {
	ClusterID, ClusterSet string
	Namespace, Pool       string
	// TargetPort is the pool's target port; every endpoint listens on it.
	TargetPort int
	// EndpointIPs are the Pod IPs; the simulators listen there.
	EndpointIPs []string
	// Objectives maps InferenceObjective names to priorities.
	Objectives map[string]int
}

// SeedCluster creates the seed's objects through the API and sets the Pods' status (Running,
// Ready, podIP) as a kubelet would.
func (c *Cluster) SeedCluster(ctx context.Context, s Seed) error {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: about.k8s.io/v1alpha1
kind: ClusterProperty
metadata: {name: cluster.clusterset.k8s.io}
spec: {value: %q}
---
apiVersion: about.k8s.io/v1alpha1
kind: ClusterProperty
metadata: {name: clusterset.k8s.io}
spec: {value: %q}
---
apiVersion: v1
kind: Namespace
metadata: {name: %s}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %s
  namespace: %s
  annotations: {inference.networking.x-k8s.io/export: ClusterSet}
spec:
  selector: {matchLabels: {app: %s}}
  targetPorts: [{number: %d}]
  endpointPickerRef: {name: spillway-spoke-epp, port: {number: 9002}}
`, s.ClusterID, s.ClusterSet, s.Namespace, s.Pool, s.Namespace, s.Pool, s.TargetPort)
	for name, prio := range s.Objectives {
		fmt.Fprintf(&b, `---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: %s, namespace: %s}
spec: {priority: %d, poolRef: {name: %s}}
`, name, s.Namespace, prio, s.Pool)
	}
	if _, err := c.KubectlStdin(ctx, b.String(), "apply", "--server-side", "--field-manager=spillway-seed", "-f", "-"); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	for i, ip := range s.EndpointIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("endpoint IP %q", ip)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", s.Pool, i), Namespace: s.Namespace,
				Labels: map[string]string{"app": s.Pool, "inference.networking.k8s.io/engine-type": "vllm"}},
			Spec: corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "vllm", Image: "vllm/vllm-openai",
				Ports: []corev1.ContainerPort{{ContainerPort: int32(s.TargetPort)}}}}},
		}
		created, err := cs.CoreV1().Pods(s.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if _, err := cs.CoreV1().Pods(s.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}
