package kube

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spillway-io/spillway/pkg/budget"
)

// tokenBudget is a TokenBudget as the API server returns it: numbers as int64 or float64,
// metadata the hub does not read, and a status.
func tokenBudget(name string, spec map[string]any) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "spillway.io/v1alpha1",
		"kind":       "TokenBudget",
		"metadata": map[string]any{
			"name": name, "namespace": "spillway-system", "uid": "u-" + name, "resourceVersion": "7", "generation": int64(2),
			"creationTimestamp": "2026-11-24T10:00:00Z",
		},
		"status": map[string]any{"conditions": []any{}},
	}}
	if spec != nil {
		o.Object["spec"] = spec
	}
	return o
}

// TestBudgets: the conversion of the namespace's objects into the allocator's set. Every valid
// object is a budget, with the defaults filled in; an invalid one is left out with its reason and
// never drops the others; no object (the last one deleted) is an empty set.
func TestBudgets(t *testing.T) {
	acme := tokenBudget("acme", map[string]any{"selector": map[string]any{"tenant": "acme"}, "tokensPerWindow": int64(600000), "burst": 0.2})
	llama := tokenBudget("llama", map[string]any{"selector": map[string]any{"model": "llama", "pool": "llm/chat"},
		"requestsPerWindow": int64(50), "count": "output", "window": "10s"})
	acmeSpec := budget.Spec{Name: "acme", Selector: budget.Selector{Tenant: "acme"}, Tokens: 600000, Count: budget.CountTotal,
		Window: budget.Duration{Duration: time.Minute}, Burst: 0.2}
	llamaSpec := budget.Spec{Name: "llama", Selector: budget.Selector{Model: "llama", Pool: "llm/chat"}, Requests: 50, Count: budget.CountOutput,
		Window: budget.Duration{Duration: 10 * time.Second}}
	for _, tc := range []struct {
		name    string
		objs    []*unstructured.Unstructured
		want    []budget.Spec
		refused map[string]string // name → what the reason says
	}{
		{"none", nil, nil, nil},
		{"one", []*unstructured.Unstructured{acme}, []budget.Spec{acmeSpec}, nil},
		{"two, sorted by name", []*unstructured.Unstructured{llama, acme}, []budget.Spec{acmeSpec, llamaSpec}, nil},
		{"an invalid one is left out", []*unstructured.Unstructured{
			acme,
			tokenBudget("nothing", map[string]any{"selector": map[string]any{"tenant": "x"}}),
			tokenBudget("no-spec", nil),
			tokenBudget("half-second", map[string]any{"tokensPerWindow": int64(5), "window": "1500ms"}),
			tokenBudget("typo", map[string]any{"tokensPerWindow": int64(5), "cuont": "output"}),
			llama,
		}, []budget.Spec{acmeSpec, llamaSpec}, map[string]string{
			"nothing": "limit nothing", "no-spec": "limit nothing", "half-second": "whole seconds", "typo": `unknown field "cuont"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, refused := Budgets(tc.objs, "x-tenant")
			if set.TenantHeader != "x-tenant" {
				t.Errorf("tenant header %q, want x-tenant", set.TenantHeader)
			}
			if !set.Equal(budget.Set{TenantHeader: "x-tenant", Budgets: tc.want}) {
				t.Errorf("budgets\n got %+v\nwant %+v", set.Budgets, tc.want)
			}
			if err := set.Validate(); err != nil {
				t.Errorf("the set does not validate: %v", err)
			}
			if len(refused) != len(tc.refused) {
				t.Errorf("refused %v, want %v", refused, tc.refused)
			}
			for name, says := range tc.refused {
				err := refused[name]
				if !errors.Is(err, budget.ErrInvalid) || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), `"`+name+`"`) {
					t.Errorf("%s refused with %v, want an error naming it and saying %q", name, err, says)
				}
			}
		})
	}
}

// TestBudgetsBeyondTheLimit: past budget.MaxBudgets objects, the last by name are refused and
// the set the allocator gets is still valid.
func TestBudgetsBeyondTheLimit(t *testing.T) {
	var objs []*unstructured.Unstructured
	for i := range budget.MaxBudgets + 2 {
		objs = append(objs, tokenBudget(fmt.Sprintf("b%05d", i), map[string]any{"tokensPerWindow": int64(1)}))
	}
	set, refused := Budgets(objs, budget.DefaultTenantHeader)
	if len(set.Budgets) != budget.MaxBudgets || set.Validate() != nil {
		t.Fatalf("%d budgets (valid: %v), want %d", len(set.Budgets), set.Validate(), budget.MaxBudgets)
	}
	for _, name := range []string{"b10000", "b10001"} {
		if err := refused[name]; err == nil || !strings.Contains(err.Error(), "more than 10000 TokenBudgets") {
			t.Errorf("%s: refused with %v, want the limit", name, err)
		}
	}
	if len(refused) != 2 {
		t.Errorf("refused %d, want 2", len(refused))
	}
}

// TestAcceptedCondition: what the hub writes in an object's status.
func TestAcceptedCondition(t *testing.T) {
	o := tokenBudget("acme", nil)
	ok := accepted(o, nil)
	if ok.Type != ConditionAccepted || ok.Status != metav1.ConditionTrue || ok.Reason != ReasonAccepted || ok.ObservedGeneration != 2 {
		t.Errorf("accepted: %+v", ok)
	}
	long := errors.New(strings.Repeat("é", 2000))
	bad := accepted(o, long)
	if bad.Status != metav1.ConditionFalse || bad.Reason != ReasonInvalid || len(bad.Message) > maxMessageBytes ||
		!utf8.ValidString(bad.Message) || !strings.HasSuffix(bad.Message, "…") {
		t.Errorf("refused: %+v (%d bytes)", bad, len(bad.Message))
	}
}
