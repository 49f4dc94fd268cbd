package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/kube"
	"github.com/spillway-io/spillway/pkg/budget"
)

const (
	ns     = "spillway-system"
	within = 30 * time.Second
)

func tokenBudget(namespace, name, spec string) string {
	return fmt.Sprintf("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", name, namespace, spec)
}

func apply(ctx context.Context, c *apiserver.Cluster, manifest string) ([]byte, error) {
	return c.KubectlStdin(ctx, manifest, "apply", "--server-side", "--field-manager=spillway-test", "-f", "-")
}

// limits returns each declared budget's token (or, without tokens, request) limit by name.
func limits(a *budget.Allocator) map[string]int64 {
	set, _ := a.Budgets()
	out := map[string]int64{}
	for _, s := range set.Budgets {
		out[s.Name] = max(s.Tokens, s.Requests)
	}
	return out
}

// declares waits until the allocator's budgets are want.
func declares(t *testing.T, a *budget.Allocator, want map[string]int64) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("the allocator declares %v", want), func() error {
		if got := limits(a); !maps.Equal(got, want) {
			return fmt.Errorf("declared %v", got)
		}
		return nil
	})
}

// condition waits until the object's Accepted condition has status and reason, a message
// containing says, and the object's generation.
func condition(t *testing.T, ctx context.Context, dyn dynamic.Interface, name string, status metav1.ConditionStatus, reason, says string) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("TokenBudget %s Accepted=%s %s", name, status, reason), func() error {
		o, err := dyn.Resource(kube.TokenBudgetResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		raw, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
		b, _ := json.Marshal(raw)
		var conds []metav1.Condition
		if err := json.Unmarshal(b, &conds); err != nil {
			return err
		}
		c := meta.FindStatusCondition(conds, kube.ConditionAccepted)
		switch {
		case c == nil:
			return errors.New("no Accepted condition")
		case c.Status != status || c.Reason != reason || !strings.Contains(c.Message, says) || c.ObservedGeneration != o.GetGeneration():
			return fmt.Errorf("Accepted=%s %s %q for generation %d of %d", c.Status, c.Reason, c.Message, c.ObservedGeneration, o.GetGeneration())
		}
		return nil
	})
}

// permissiveCRD is the TokenBudget CRD with a spec the API server no longer checks, as an
// older or hand-edited CRD might have: objects the hub must refuse itself get through.
func permissiveCRD(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/crds/spillway/spillway.io_tokenbudgets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	versions := crd["spec"].(map[string]any)["versions"].([]any)
	schema := versions[0].(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
	schema["properties"].(map[string]any)["spec"] = map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	out, err := yaml.Marshal(crd)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestWatcherOnAPIServer follows TokenBudgets on a real kube-apiserver with the CRD of
// deploy/crds. Start returns with the objects already there declared; creations, updates and
// deletions reach the allocator; the API server refuses an invalid object; one that the hub must
// refuse itself (written under a looser schema) is left out, logged once, and marked
// Accepted=False with the reason while the others stay; objects of another namespace are never
// read; the leader's Accepted conditions follow each object's generation. Start fails, saying
// what to do, without permission or without the CRD.
func TestWatcherOnAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// kubectl caches discovery per API server address; every test server has a new one.
	t.Setenv("KUBECACHEDIR", t.TempDir())
	api := apiserver.StartOne(ctx, t, "../..", "hub")
	dyn := dynamic.NewForConfigOrDie(api.RESTConfig())
	if _, err := api.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{
		tokenBudget(ns, "acme", "{selector: {tenant: acme}, tokensPerWindow: 600000, burst: 0.2}"),
		tokenBudget("default", "elsewhere", "{tokensPerWindow: 1}"),
	} {
		if _, err := apply(ctx, api, m); err != nil {
			t.Fatal(err)
		}
	}

	alloc := budget.NewAllocator(budget.AllocatorOptions{})
	logs := &testkit.LogBuffer{}
	w, err := kube.Start(ctx, kube.Options{
		Client: dyn, Namespace: ns, TenantHeader: budget.DefaultTenantHeader, Allocator: alloc,
		RetryInterval: 200 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Start returns with the namespace's objects declared, before anything runs: the hub
	// serves no spoke without its budgets.
	if got := limits(alloc); !maps.Equal(got, map[string]int64{"acme": 600000}) {
		t.Fatalf("after Start the allocator declares %v, want acme alone", got)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{w.Run, w.Lead} {
		wg.Go(func() {
			if err := run(runCtx); err != nil {
				t.Error(err)
			}
		})
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
			w.Close()
		}
	}
	t.Cleanup(halt)
	condition(t, ctx, dyn, "acme", metav1.ConditionTrue, kube.ReasonAccepted, "")

	// Created, updated, deleted.
	if _, err := apply(ctx, api, tokenBudget(ns, "llama", "{selector: {model: llama}, requestsPerWindow: 50, window: 10s}")); err != nil {
		t.Fatal(err)
	}
	declares(t, alloc, map[string]int64{"acme": 600000, "llama": 50})
	condition(t, ctx, dyn, "llama", metav1.ConditionTrue, kube.ReasonAccepted, "")
	if _, err := apply(ctx, api, tokenBudget(ns, "acme", "{selector: {tenant: acme}, tokensPerWindow: 900000, burst: 0.2}")); err != nil {
		t.Fatal(err)
	}
	declares(t, alloc, map[string]int64{"acme": 900000, "llama": 50})
	condition(t, ctx, dyn, "acme", metav1.ConditionTrue, kube.ReasonAccepted, "") // of generation 2
	if _, err := api.Kubectl(ctx, "-n", ns, "delete", "tokenbudget", "llama"); err != nil {
		t.Fatal(err)
	}
	declares(t, alloc, map[string]int64{"acme": 900000})

	// The CRD refuses what the hub would.
	out, err := apply(ctx, api, tokenBudget(ns, "half", "{tokensPerWindow: 5, window: 1500ms}"))
	if err == nil || !strings.Contains(string(out), "window must be whole seconds") {
		t.Fatalf("a window of 1500ms: %v\n%s", err, out)
	}

	// An object the API server no longer checks: the hub refuses it and keeps the others.
	if _, err := apply(ctx, api, permissiveCRD(t)); err != nil {
		t.Fatal(err)
	}
	broken := tokenBudget(ns, "broken", "{selector: {tenant: beta}}")
	testkit.Eventually(t, within, "the looser schema in force", func() error {
		_, err := apply(ctx, api, broken)
		return err
	})
	condition(t, ctx, dyn, "broken", metav1.ConditionFalse, kube.ReasonInvalid, "the budget would limit nothing")
	testkit.Eventually(t, within, "the refusal logged", testkit.True(func() bool {
		return len(logs.Entries("TokenBudget refused; the other budgets are used")) > 0
	}))
	if got := limits(alloc); !maps.Equal(got, map[string]int64{"acme": 900000}) {
		t.Errorf("with broken refused the allocator declares %v, want acme alone", got)
	}
	// Fixed, it is used.
	if _, err := apply(ctx, api, tokenBudget(ns, "broken", "{selector: {tenant: beta}, tokensPerWindow: 1000}")); err != nil {
		t.Fatal(err)
	}
	declares(t, alloc, map[string]int64{"acme": 900000, "broken": 1000})
	condition(t, ctx, dyn, "broken", metav1.ConditionTrue, kube.ReasonAccepted, "")
	refusals := logs.Entries("TokenBudget refused; the other budgets are used")
	if len(refusals) != 1 || refusals[0]["name"] != "broken" || !strings.Contains(fmt.Sprint(refusals[0]["err"]), "limit nothing") {
		t.Errorf("refusals logged: %v, want broken's once", refusals)
	}
	halt()

	// Start says what is missing.
	nobody := rest.CopyConfig(api.RESTConfig())
	nobody.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":spillway-hub"}
	if _, err := kube.Start(ctx, kube.Options{Client: dynamic.NewForConfigOrDie(nobody), Namespace: ns, Allocator: budget.NewAllocator(budget.AllocatorOptions{})}); !errors.Is(err, kube.ErrNotListed) ||
		!strings.Contains(err.Error(), "the hub's service account may not list them") {
		t.Errorf("Start without permission: %v", err)
	}
	if _, err := api.Kubectl(ctx, "delete", "crd", "tokenbudgets.spillway.io", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, within, "Start without the CRD says to install it", func() error {
		w, err := kube.Start(ctx, kube.Options{Client: dyn, Namespace: ns, Allocator: budget.NewAllocator(budget.AllocatorOptions{})})
		if err == nil {
			w.Close()
			return errors.New("Start listed TokenBudgets after the CRD's deletion")
		}
		if !errors.Is(err, kube.ErrNotListed) || !strings.Contains(err.Error(), "the TokenBudget CRD is not installed") {
			return fmt.Errorf("Start: %v", err)
		}
		return nil
	})
}
