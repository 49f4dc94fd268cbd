// Package kube is the hub's Kubernetes side: with --budgets-from-cluster the hub reads the
// fleet's token budgets from the TokenBudget objects (deploy/crds/spillway) of one namespace of
// its own cluster, instead of from --budgets-file.
//
// Lifecycle of a Watcher:
//
//  1. Start lists the TokenBudgets once, directly, so that a missing CRD or a missing permission
//     stops the hub with an error that says what to install; then it starts an informer on the
//     namespace, waits (at most Options.SyncTimeout) until the informer has listed every object,
//     and gives the allocator the first set. The hub serves only after that, as it does after
//     reading a budgets file.
//  2. Run (every replica) gives the allocator the set again at each change: every valid object
//     becomes a budget; an invalid one is left out, logged once with its reason, and never drops
//     the others. A deleted object's budget is gone from the next set.
//  3. Lead (the leader replica only, under the hub's election) writes each object's Accepted
//     condition: True while the hub enforces it, False with the reason otherwise. Every replica
//     reads the same objects and decides the same, so one writer is enough.
//  4. While the API server is away the informer keeps its last objects, so the budgets stay as
//     they were, and it lists again when the API server returns. Close stops the informer.
//
// The objects live in the hub's cluster alone and are not copied to the member clusters: the
// hub is the one that divides each budget, and spokes receive only their grants.
package kube

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/spillway-io/spillway/pkg/budget"
)

// TokenBudgetResource is Spillway's TokenBudget CRD (deploy/crds/spillway).
var TokenBudgetResource = schema.GroupVersionResource{Group: "spillway.io", Version: "v1alpha1", Resource: "tokenbudgets"}

// The TokenBudget condition the hub writes, and its reasons.
const (
	ConditionAccepted = "Accepted"
	// ReasonAccepted: the hub divides the budget among the clusters and they enforce it.
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the hub refuses the object; the message says why.
	ReasonInvalid = "Invalid"
)

// maxMessageBytes bounds a condition's message (the CRD allows 32 KiB).
const maxMessageBytes = 1024

// Budgets converts TokenBudget objects into the set the allocator divides, with tenantHeader
// (already checked). Each object is read by budget.ParseSpec, the check of a budgets file's
// documents; an invalid one is left out of the set, with its reason in refused (by name), and
// the others are used. Past budget.MaxBudgets, the objects last by name are refused.
func Budgets(objs []*unstructured.Unstructured, tenantHeader string) (set budget.Set, refused map[string]error) {
	refused = map[string]error{}
	set = budget.Set{TenantHeader: tenantHeader}
	objs = slices.SortedFunc(slices.Values(objs), func(a, b *unstructured.Unstructured) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
	for _, o := range objs {
		s, err := specOf(o)
		switch {
		case err != nil:
			refused[o.GetName()] = err
		case len(set.Budgets) == budget.MaxBudgets:
			refused[o.GetName()] = fmt.Errorf("%w %q: more than %d TokenBudgets in the namespace; the hub divides the first %d by name", budget.ErrInvalid, o.GetName(), budget.MaxBudgets, budget.MaxBudgets)
		default:
			set.Budgets = append(set.Budgets, s)
		}
	}
	set.Sort()
	return set, refused
}

// specOf reads one object's spec.
func specOf(o *unstructured.Unstructured) (budget.Spec, error) {
	var raw []byte
	if spec, ok := o.Object["spec"]; ok {
		b, err := json.Marshal(spec)
		if err != nil {
			return budget.Spec{}, fmt.Errorf("%w %q: spec: %w", budget.ErrInvalid, o.GetName(), err)
		}
		raw = b
	}
	return budget.ParseSpec(o.GetName(), raw)
}

// accepted is the Accepted condition of an object, refused for the reason err or not.
func accepted(o *unstructured.Unstructured, err error) metav1.Condition {
	c := metav1.Condition{
		Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message:            "the hub divides the budget among the clusters that draw on it",
		ObservedGeneration: o.GetGeneration(),
	}
	if err != nil {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonInvalid, truncate(err.Error(), maxMessageBytes)
	}
	return c
}

// truncate cuts s to at most n bytes of valid UTF-8, marking the cut.
func truncate(s string, n int) string {
	const mark = "…"
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len(mark)], "") + mark
}
