package kube

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	apixv1alpha1 "sigs.k8s.io/gateway-api-inference-extension/apix/v1alpha1"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/spoke/source"
)

// ObjectiveGroups are the API groups whose InferenceObjectives the spoke reads: GIE's up to v1.5
// and llm-d's, where the kind moved after GIE v1.6.0. The version is whatever the cluster serves.
var ObjectiveGroups = []string{"inference.networking.x-k8s.io", "llm-d.ai"}

// Event reasons the spoke records on objects it cannot use.
const (
	ReasonInvalidSelector      = "InvalidSelector"
	ReasonUnknownEngineType    = "UnknownEngineType"
	ReasonUnsupportedExport    = "UnsupportedExportValue"
	ReasonObjectivePoolMissing = "PoolNotFound"
)

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = giev1.Install(s)
	_ = apixv1alpha1.Install(s)
	return s
}

// discoverObjectives returns the InferenceObjective resources the cluster serves, preferring the
// newest version of each group.
func (c *Controller) discoverObjectives(ctx context.Context) ([]schema.GroupVersionResource, error) {
	var out []schema.GroupVersionResource
	groups, err := c.disco.ServerGroups()
	if err != nil {
		return nil, fmt.Errorf("discover API groups: %w", err)
	}
	for _, g := range groups.Groups {
		if !slices.Contains(ObjectiveGroups, g.Name) {
			continue
		}
		versions := []string{g.PreferredVersion.Version}
		for _, v := range g.Versions {
			if v.Version != g.PreferredVersion.Version {
				versions = append(versions, v.Version)
			}
		}
		for _, v := range versions {
			gv := schema.GroupVersion{Group: g.Name, Version: v}
			res, err := c.disco.ServerResourcesForGroupVersion(gv.String())
			if err != nil {
				if apierrors.IsNotFound(err) || ctx.Err() != nil {
					continue
				}
				return nil, fmt.Errorf("discover %s: %w", gv, err)
			}
			if slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "inferenceobjectives" }) {
				out = append(out, gv.WithResource("inferenceobjectives"))
				break
			}
		}
	}
	return out, nil
}

// buildPools reads the local pools, their endpoints and their objectives from the caches.
func (c *Controller) buildPools() ([]source.Pool, map[fleet.PoolRef]map[string]int) {
	ipools, err := c.gieInf.Inference().V1().InferencePools().Lister().List(labels.Everything())
	if err != nil {
		c.log.Error("list inference pools from the cache", "err", err)
	}
	podLister := c.kubeInf.Core().V1().Pods().Lister()
	pools := make([]source.Pool, 0, len(ipools))
	for _, ip := range ipools {
		p := source.Pool{
			Ref:    fleet.PoolRef{Namespace: ip.Namespace, Name: ip.Name},
			Labels: ip.Labels,
			Export: ip.Annotations[apixv1alpha1.ExportAnnotationKey] == apixv1alpha1.ExportAnnotationVal,
		}
		if r := ip.Spec.EndpointPickerRef; r != nil && (r.Kind == "" || r.Kind == "Service") {
			p.EndpointPicker = string(r.Name)
			if r.Port != nil {
				p.EndpointPickerPort = uint32(r.Port.Number)
			}
		}
		for _, tp := range ip.Spec.TargetPorts {
			p.TargetPorts = append(p.TargetPorts, uint32(tp.Number))
		}
		if v, ok := ip.Annotations[apixv1alpha1.ExportAnnotationKey]; ok && !p.Export {
			c.warnOnce(ip, ReasonUnsupportedExport, fmt.Sprintf("export annotation value %q is not supported; use %q", v, apixv1alpha1.ExportAnnotationVal))
		}
		set := make(labels.Set, len(ip.Spec.Selector.MatchLabels))
		for k, v := range ip.Spec.Selector.MatchLabels {
			set[string(k)] = string(v)
		}
		if len(set) == 0 {
			// The CRD requires a selector; an empty one would select every Pod of the namespace.
			c.warnOnce(ip, ReasonInvalidSelector, "spec.selector.matchLabels is empty: the pool selects no Pods")
			pools = append(pools, p)
			continue
		}
		pods, err := podLister.Pods(ip.Namespace).List(labels.SelectorFromSet(set))
		if err != nil {
			c.log.Error("list pods from the cache", "pool", p.Ref.String(), "err", err)
		}
		slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
		for _, pod := range pods {
			if !podReady(pod) {
				continue
			}
			engine, err := podEngine(pod.Labels, c.opts.DefaultEngine)
			if err != nil {
				c.warnOnce(pod, ReasonUnknownEngineType, fmt.Sprintf("label %s=%q: %v; reading its metrics as vLLM", modelmetrics.EngineLabel, pod.Labels[modelmetrics.EngineLabel], err))
				engine = modelmetrics.EngineVLLM
			}
			for _, port := range p.TargetPorts {
				p.Endpoints = append(p.Endpoints, source.Endpoint{
					Address: net.JoinHostPort(pod.Status.PodIP, strconv.FormatUint(uint64(port), 10)),
					Engine:  engine,
					Pod:     pod.Namespace + "/" + pod.Name,
				})
			}
		}
		pools = append(pools, p)
	}
	slices.SortFunc(pools, func(a, b source.Pool) int { return a.Ref.Compare(b.Ref) })
	return pools, c.buildObjectives(pools)
}

// buildObjectives maps each pool to its objectives' priorities. An objective whose pool does not
// exist gets a warning event and is ignored.
func (c *Controller) buildObjectives(pools []source.Pool) map[fleet.PoolRef]map[string]int {
	exists := make(map[fleet.PoolRef]bool, len(pools))
	for _, p := range pools {
		exists[p.Ref] = true
	}
	out := map[fleet.PoolRef]map[string]int{}
	for _, gvr := range c.objectiveGVRs {
		objs, err := c.dynInf.ForResource(gvr).Lister().List(labels.Everything())
		if err != nil {
			c.log.Error("list objectives from the cache", "resource", gvr.String(), "err", err)
			continue
		}
		for _, o := range objs {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			poolName, _, _ := unstructured.NestedString(u.Object, "spec", "poolRef", "name")
			priority, _, _ := unstructured.NestedInt64(u.Object, "spec", "priority")
			ref := fleet.PoolRef{Namespace: u.GetNamespace(), Name: poolName}
			if !exists[ref] {
				c.warnOnce(u, ReasonObjectivePoolMissing, fmt.Sprintf("spec.poolRef names InferencePool %q, which does not exist in namespace %s", poolName, u.GetNamespace()))
				continue
			}
			if out[ref] == nil {
				out[ref] = map[string]int{}
			}
			out[ref][u.GetName()] = int(priority)
		}
	}
	return out
}

// podReady reports whether a Pod serves: running, Ready, with an IP, not terminating.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// warnOnce records a warning event on obj once per (object, reason, message).
func (c *Controller) warnOnce(obj runtime.Object, reason, msg string) {
	key := fmt.Sprintf("%p", obj)
	if m, ok := obj.(interface {
		GetNamespace() string
		GetName() string
		GetUID() types.UID
	}); ok {
		key = fmt.Sprintf("%s/%s/%s", m.GetNamespace(), m.GetName(), m.GetUID())
	}
	key += "/" + reason + "/" + msg
	c.mu.Lock()
	if c.warned == nil || len(c.warned) > 10000 {
		c.warned = map[string]bool{} // bounded: at worst a warning is recorded again
	}
	seen := c.warned[key]
	c.warned[key] = true
	c.mu.Unlock()
	if seen {
		return
	}
	c.log.Warn("object not usable", "reason", reason, "message", msg)
	if c.leading.Load() { // an event is a write: the leader's alone
		c.events.Event(obj, corev1.EventTypeWarning, reason, msg)
	}
}

// podEngine is the engine of a Pod: its engine-type label's, else def (GIE's metric flags), else
// vLLM. An unknown label value is an error (the Pod is then read as vLLM).
func podEngine(labels map[string]string, def modelmetrics.Engine) (modelmetrics.Engine, error) {
	label := labels[modelmetrics.EngineLabel]
	if label == "" && def != "" {
		return def, nil
	}
	return modelmetrics.ParseEngine(label)
}
