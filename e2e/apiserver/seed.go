package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Seed is what a simulated workload cluster holds: its KEP-2149 identity, exported
// InferencePools (Pool, or Pools), a ready Pod per model-server endpoint and InferenceObjectives
// for the first pool.
type Seed struct {
	ClusterID, ClusterSet string
	Namespace, Pool       string
	// TargetPort is the pool's target port; every endpoint listens on it.
	TargetPort int
	// EndpointIPs are the Pod IPs; the simulators listen there.
	EndpointIPs []string
	// Pools, when set, are the cluster's pools instead of Pool.
	Pools []SeedPool
	// Objectives maps InferenceObjective names to priorities.
	Objectives map[string]int
}

// SeedPool is one exported InferencePool of a Seed: its Pods are labelled app=Name and listen
// on TargetPort at EndpointIPs; its endpointPickerRef names Service spillway-spoke-epp at
// EPPPort (9002 when 0).
type SeedPool struct {
	Name        string
	TargetPort  int
	EPPPort     int
	EndpointIPs []string
}

// PoolManifest is the InferencePool of p in namespace ns, exported to the ClusterSet.
func PoolManifest(ns string, p SeedPool) string {
	return fmt.Sprintf(`apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %s
  namespace: %s
  annotations: {inference.networking.x-k8s.io/export: ClusterSet}
spec:
  selector: {matchLabels: {app: %s}}
  targetPorts: [{number: %d}]
  endpointPickerRef: {name: spillway-spoke-epp, port: {number: %d}}
`, p.Name, ns, p.Name, p.TargetPort, cmp.Or(p.EPPPort, 9002))
}

// SeedCluster creates the seed's objects through the API and sets the Pods' status (Running,
// Ready, podIP) as a kubelet would.
func (c *Cluster) SeedCluster(ctx context.Context, s Seed) error {
	pools := s.Pools
	if len(pools) == 0 {
		pools = []SeedPool{{Name: s.Pool, TargetPort: s.TargetPort, EndpointIPs: s.EndpointIPs}}
	}
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
`, s.ClusterID, s.ClusterSet, s.Namespace)
	for _, p := range pools {
		b.WriteString("---\n" + PoolManifest(s.Namespace, p))
	}
	for name, prio := range s.Objectives {
		fmt.Fprintf(&b, `---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: %s, namespace: %s}
spec: {priority: %d, poolRef: {name: %s}}
`, name, s.Namespace, prio, pools[0].Name)
	}
	if _, err := c.KubectlStdin(ctx, b.String(), "apply", "--server-side", "--field-manager=spillway-seed", "-f", "-"); err != nil {
		return err
	}
	for _, p := range pools {
		for i, ip := range p.EndpointIPs {
			if err := c.ReadyPod(ctx, s.Namespace, fmt.Sprintf("%s-%d", p.Name, i), p.Name, ip, p.TargetPort); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReadyPod creates a Pod labelled app=app that listens on port, and sets its status (Running,
// Ready, podIP ip) as a kubelet would.
func (c *Cluster) ReadyPod(ctx context.Context, ns, name, app, ip string, port int) error {
	if net.ParseIP(ip) == nil {
		return fmt.Errorf("endpoint IP %q", ip)
	}
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{"app": app, "inference.networking.k8s.io/engine-type": "vllm"}},
		Spec: corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "vllm", Image: "vllm/vllm-openai",
			Ports: []corev1.ContainerPort{{ContainerPort: int32(port)}}}}},
	}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}
