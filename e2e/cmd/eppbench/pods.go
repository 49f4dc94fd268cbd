package main

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/spillway-io/spillway/e2e/apiserver"
)

type kubeClients struct {
	cs  kubernetes.Interface
	dyn dynamic.Interface
}

var poolGVR = schema.GroupVersionResource{Group: "inference.networking.k8s.io", Version: "v1", Resource: "inferencepools"}

func newKube(c *apiserver.Cluster) (*kubeClients, error) {
	cfg := &rest.Config{Host: c.Host, BearerToken: c.Token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CA}, QPS: 500, Burst: 1000}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kubeClients{cs: cs, dyn: dyn}, nil
}

// setPods makes the pool's Pods exactly one per IP, Running and Ready (there is no kubelet: the
// status is written through the API, as kwok does), and creates the InferencePool once.
func (k *kubeClients) setPods(ctx context.Context, ips []string) error {
	pods := k.cs.CoreV1().Pods(namespace)
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{LabelSelector: "app=sim"}); err != nil {
		return fmt.Errorf("delete pods: %w", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ips))
	sem := make(chan struct{}, 32)
	for i, ip := range ips {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- k.createPod(ctx, fmt.Sprintf("sim-%d", i), ip)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "inference.networking.k8s.io/v1",
		"kind":       "InferencePool",
		"metadata":   map[string]any{"name": "chat", "namespace": namespace},
		"spec": map[string]any{
			"selector":          map[string]any{"matchLabels": map[string]any{"app": "sim"}},
			"targetPorts":       []any{map[string]any{"number": int64(8000)}},
			"endpointPickerRef": map[string]any{"name": "gie-epp", "port": map[string]any{"number": int64(9002)}},
		},
	}}
	_, err := k.dyn.Resource(poolGVR).Namespace(namespace).Create(ctx, pool, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create InferencePool: %w", err)
	}
	return nil
}

func (k *kubeClients) createPod(ctx context.Context, name, ip string) error {
	pods := k.cs.CoreV1().Pods(namespace)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "sim"}},
		Spec: corev1.PodSpec{
			NodeName:   "bench-node",
			Containers: []corev1.Container{{Name: "vllm", Image: "modelsim", Ports: []corev1.ContainerPort{{ContainerPort: 8000}}}},
		},
	}
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		PodIP:  ip,
		PodIPs: []corev1.PodIP{{IP: ip}},
		HostIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		StartTime: &now,
	}
	if _, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of pod %s: %w", name, err)
	}
	return nil
}
