package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// SpillPolicyResource is Spillway's SpillPolicy CRD (deploy/crds/spillway).
var SpillPolicyResource = schema.GroupVersionResource{Group: "spillway.io", Version: "v1alpha1", Resource: "spillpolicies"}

// Spiller is the EPP pool's spill decision, which the controller configures from the pool's
// SpillPolicy and whose state it writes into the policy's status.
type Spiller interface {
	SetPolicy(spill.Policy) error
	State() spill.State
}

// SpillPolicy condition reasons.
const (
	SpillConditionAccepted = "Accepted"
	ReasonPolicyAccepted   = "Accepted"
	ReasonPolicyInvalid    = "Invalid"
	// ReasonPolicyConflicted: another, older SpillPolicy names the same pool and is the one used.
	ReasonPolicyConflicted = "Conflicted"
)

// policyStatus is what one SpillPolicy of the EPP's pool should say in its status.
type policyStatus struct {
	obj     *unstructured.Unstructured
	cond    metav1.Condition
	inForce bool
}

// spillPolicies reads a pool's SpillPolicies: the policy in force (the oldest naming the pool,
// when valid; the default policy otherwise) and each one's status.
func (c *Controller) spillPolicies(pool fleet.PoolRef) (spill.Policy, []policyStatus, error) {
	objs, err := c.dynInf.ForResource(SpillPolicyResource).Lister().ByNamespace(pool.Namespace).List(labels.Everything())
	if err != nil {
		return spill.Policy{}, nil, err
	}
	var mine []*unstructured.Unstructured
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		if name, _, _ := unstructured.NestedString(u.Object, "spec", "poolRef", "name"); name == pool.Name {
			mine = append(mine, u)
		}
	}
	slices.SortFunc(mine, func(a, b *unstructured.Unstructured) int {
		if d := a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time); d != 0 {
			return d
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	policy := c.opts.DefaultSpillPolicy
	states := make([]policyStatus, 0, len(mine))
	for i, u := range mine {
		cond := metav1.Condition{Type: SpillConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonPolicyAccepted,
			Message: "in force for pool " + pool.String(), ObservedGeneration: u.GetGeneration()}
		var p spill.Policy
		var perr error
		if i > 0 {
			cond.Status, cond.Reason = metav1.ConditionFalse, ReasonPolicyConflicted
			cond.Message = fmt.Sprintf("SpillPolicy %s names the same pool and is older; it is the one in force", mine[0].GetName())
		} else if p, perr = policyOf(u); perr != nil {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonPolicyInvalid, truncate(perr.Error(), 1024)
		} else {
			policy = p
		}
		states = append(states, policyStatus{obj: u, cond: cond, inForce: i == 0 && perr == nil})
	}
	return policy, states, nil
}

// applySpillPolicy gives each spill decision its pool's SpillPolicy in force (the oldest
// naming the pool), or the default policy when there is none or it is invalid. Every replica
// does it: each has its own decisions.
func (c *Controller) applySpillPolicy() error {
	if !c.hasSpillPolicies.Load() || c.opts.Spillers == nil {
		return nil
	}
	var errs []error
	for pool, sp := range c.opts.Spillers() {
		policy, _, err := c.spillPolicies(pool)
		if err == nil {
			err = sp.SetPolicy(policy)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SpillPolicy returns the policy in force for a pool: its SpillPolicy (the oldest naming it,
// when valid), else the default. A spoke gives it to the spill decision of a pool it starts
// serving, before the next reconcile.
func (c *Controller) SpillPolicy(pool fleet.PoolRef) spill.Policy {
	if !c.hasSpillPolicies.Load() {
		return c.opts.DefaultSpillPolicy
	}
	p, _, err := c.spillPolicies(pool)
	if err != nil {
		return c.opts.DefaultSpillPolicy
	}
	return p
}

// syncSpillPolicy writes the status of every SpillPolicy of the pools the EPPs serve: Accepted,
// and for the one in force whether the pool is spilling and to where (this replica's decision).
func (c *Controller) syncSpillPolicy(ctx context.Context) error {
	if !c.hasSpillPolicies.Load() || c.opts.Spillers == nil {
		return nil
	}
	var errs []error
	for pool, sp := range c.opts.Spillers() {
		_, states, err := c.spillPolicies(pool)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, st := range states {
			errs = append(errs, c.writeSpillStatus(ctx, st.obj, st.cond, sp, st.inForce))
		}
	}
	return errors.Join(errs...)
}

func policyOf(u *unstructured.Unstructured) (spill.Policy, error) {
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	b, err := json.Marshal(spec)
	if err != nil {
		return spill.Policy{}, err
	}
	var s spill.PolicySpec
	if err := json.Unmarshal(b, &s); err != nil {
		return spill.Policy{}, err
	}
	return s.Policy()
}

// writeSpillStatus updates a SpillPolicy's status when it changed.
func (c *Controller) writeSpillStatus(ctx context.Context, u *unstructured.Unstructured, cond metav1.Condition, sp Spiller, inForce bool) error {
	var st spill.State
	if inForce {
		st = sp.State()
	}
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	if status == nil {
		status = map[string]any{}
	}
	var conds []metav1.Condition
	if raw, ok := status["conditions"]; ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &conds)
	}
	before := slices.Clone(conds)
	meta.SetStatusCondition(&conds, cond)
	want := map[string]any{
		"spilling":           st.Spilling,
		"targetCluster":      st.LastTarget,
		"targetRegion":       st.LastRegion,
		"observedGeneration": u.GetGeneration(),
	}
	if !st.Since.IsZero() {
		want["since"] = st.Since.UTC().Format(time.RFC3339)
	}
	same := conditionsEqual(before, conds)
	for k, v := range want {
		if fmt.Sprint(status[k]) != fmt.Sprint(v) {
			same = false
		}
	}
	if _, had := status["since"]; had && st.Since.IsZero() {
		same = false
	}
	if same {
		return nil
	}
	b, _ := json.Marshal(conds)
	var rawConds []any
	_ = json.Unmarshal(b, &rawConds)
	want["conditions"] = rawConds
	obj := u.DeepCopy()
	if err := unstructured.SetNestedMap(obj.Object, want, "status"); err != nil {
		return err
	}
	_, err := c.dyn.Resource(SpillPolicyResource).Namespace(u.GetNamespace()).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or changed: the informer brings the new version and another pass
	}
	if err != nil {
		return fmt.Errorf("update status of SpillPolicy %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

func conditionsEqual(a, b []metav1.Condition) bool {
	return slices.EqualFunc(a, b, func(x, y metav1.Condition) bool {
		return x.Type == y.Type && x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message && x.ObservedGeneration == y.ObservedGeneration
	})
}
