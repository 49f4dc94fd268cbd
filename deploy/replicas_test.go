package deploy

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestSpokeReplicas: the spoke runs two replicas, preferably on two nodes, that a rollout and a
// node drain never take down together (a surge rollout, a PodDisruptionBudget of one), each
// knowing its namespace for the leader election's Lease, which its role lets it read, create and
// renew there and nothing else. The join example, whose credentials volume is one Pod's, runs
// one replica and no budget that would block drains.
func TestSpokeReplicas(t *testing.T) {
	for _, dir := range []string{"spoke", "examples/spoke", "examples/spoke-pool-namespace"} {
		t.Run(dir, func(t *testing.T) {
			objs := objects(t, kustomize(t, dir))
			d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
			pod := d.Spec.Template
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
				t.Errorf("replicas %v, want 2", d.Spec.Replicas)
			}
			if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
				t.Errorf("rolling update %+v: want maxUnavailable 0", ru)
			}
			// A stopping replica serves on for the preStop sleep, then drains for up to
			// --epp-drain-timeout (30 s by default): the grace period covers both.
			if ls := pod.Spec.Containers[0].Lifecycle; ls == nil || ls.PreStop == nil || ls.PreStop.Sleep == nil || ls.PreStop.Sleep.Seconds < 1 {
				t.Errorf("lifecycle %+v: want a preStop sleep while the gateways stop sending to the replica", ls)
			} else if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < ls.PreStop.Sleep.Seconds+30+5 {
				t.Errorf("terminationGracePeriodSeconds %v: want at least the preStop sleep, the 30 s drain and a margin", g)
			}
			var ns *corev1.EnvVar
			for i, e := range pod.Spec.Containers[0].Env {
				if e.Name == "POD_NAMESPACE" {
					ns = &pod.Spec.Containers[0].Env[i]
				}
			}
			if ns == nil || ns.ValueFrom == nil || ns.ValueFrom.FieldRef == nil || ns.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("POD_NAMESPACE %+v, want the Pod's namespace from the downward API", ns)
			}
			aa := pod.Spec.Affinity
			switch {
			case aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1:
				t.Errorf("affinity %+v: want one preferred pod anti-affinity", aa)
			case len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0:
				t.Error("a required anti-affinity would leave a replica pending on a one-node cluster")
			default:
				term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
				if term.TopologyKey != corev1.LabelHostname || term.LabelSelector == nil ||
					!labels.SelectorFromSet(term.LabelSelector.MatchLabels).Matches(labels.Set(pod.Labels)) {
					t.Errorf("anti-affinity term %+v: want the spoke's Pods apart by %s", term, corev1.LabelHostname)
				}
			}
			pdb := decode[policyv1.PodDisruptionBudget](t, find(t, objs, "PodDisruptionBudget", "spillway-spoke"))
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
				t.Errorf("budget minAvailable %v maxUnavailable %v, want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
			if pdb.Spec.Selector == nil || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) ||
				pdb.Namespace != d.Namespace {
				t.Errorf("budget %+v in %s does not select the spoke's Pods in %s", pdb.Spec.Selector, pdb.Namespace, d.Namespace)
			}
			role := decode[rbacv1.Role](t, find(t, objs, "Role", "spillway-spoke-leader-election"))
			want := []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}}
			if !slices.EqualFunc(role.Rules, want, func(a, b rbacv1.PolicyRule) bool {
				return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) && slices.Equal(a.Verbs, b.Verbs) && len(a.ResourceNames) == 0
			}) || role.Namespace != d.Namespace {
				t.Errorf("Role %s in %s: rules %+v, want %+v in %s", role.Name, role.Namespace, role.Rules, want, d.Namespace)
			}
			rb := decode[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", "spillway-spoke-leader-election"))
			if rb.Namespace != d.Namespace || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
				rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != d.Spec.Template.Spec.ServiceAccountName || rb.Subjects[0].Namespace != d.Namespace {
				t.Errorf("RoleBinding %+v: want the Role bound to the spoke's ServiceAccount in %s", rb, d.Namespace)
			}
		})
	}
	t.Run("examples/spoke-join", func(t *testing.T) {
		objs := objects(t, kustomize(t, "examples/spoke-join"))
		d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("replicas %v, want 1: the credentials volume is one Pod's", d.Spec.Replicas)
		}
		for _, o := range objs {
			if o.Kind == "PodDisruptionBudget" {
				t.Errorf("PodDisruptionBudget %s with one replica would block every drain", o.Metadata.Name)
			}
		}
	})
}
