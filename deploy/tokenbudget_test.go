package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/budget"
)

// tokenBudgetCRD is the CRD the hub's cluster installs for --budgets-from-cluster.
const tokenBudgetCRD = "crds/spillway/spillway.io_tokenbudgets.yaml"

// installTokenBudgetCRD applies the TokenBudget CRD, as docs/install.md says for the hub's
// cluster, and waits until the API server serves it.
func installTokenBudgetCRD(t *testing.T, ctx context.Context, c *apiserver.Cluster) {
	t.Helper()
	b, err := os.ReadFile(tokenBudgetCRD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply(ctx, c, string(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=established", "--timeout=60s", "crd/tokenbudgets.spillway.io"); err != nil {
		t.Fatal(err)
	}
}

func tokenBudget(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: %s, namespace: %s}\n%s\n", name, ns, spec)
}

// testTokenBudget: the CRD refuses at `kubectl apply` what the hub would refuse, its defaults are
// the hub's, and every budget it accepts the hub accepts too (budget.ParseSpec, the hub's own
// check, reads it back as the API server stored it).
func testTokenBudget(t *testing.T, ctx context.Context, c *apiserver.Cluster) {
	installTokenBudgetCRD(t, ctx, c)
	const ns = "tokenbudget-schema"
	if _, err := c.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	// stored returns the spec the API server stored, as the hub reads it.
	stored := func(t *testing.T, name string) budget.Spec {
		t.Helper()
		out, err := c.Kubectl(ctx, "get", "tokenbudget", name, "-n", ns, "-o", "jsonpath={.spec}")
		if err != nil {
			t.Fatal(err)
		}
		s, err := budget.ParseSpec(name, out)
		if err != nil {
			t.Fatalf("the API server took a budget the hub refuses: %v\n%s", err, out)
		}
		return s
	}

	// The defaults the schema fills in are the hub's.
	if _, err := apply(ctx, c, tokenBudget(ns, "minimal", "spec: {tokensPerWindow: 5}")); err != nil {
		t.Fatal(err)
	}
	want, err := budget.ParseSpec("minimal", []byte(`{"tokensPerWindow":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := stored(t, "minimal"); got != want {
		t.Errorf("defaulted by the API server %+v, by the hub %+v", got, want)
	}

	// Every field set, at the edges of what is allowed.
	for name, spec := range map[string]string{
		"full": `spec:
  selector: {tenant: acme, objective: critical, model: llama-3-70b, pool: llm/chat}
  tokensPerWindow: 600000
  count: input
  requestsPerWindow: 3000
  window: 24h
  burst: 1`,
		"requests-only":    "spec: {requestsPerWindow: 1, window: 1s, burst: 0}",
		"hours-and-minute": "spec: {tokensPerWindow: 1, window: 1h30m, count: output}",
		"milliseconds":     "spec: {tokensPerWindow: 1, window: 60000ms}",
	} {
		if _, err := apply(ctx, c, tokenBudget(ns, name, spec)); err != nil {
			t.Errorf("%s: a valid budget was refused: %v", name, err)
			continue
		}
		stored(t, name)
	}

	for _, tc := range []struct {
		name, manifest, want string
	}{
		{"no limit", tokenBudget(ns, "invalid", "spec: {selector: {tenant: acme}}"), "the budget limits nothing"},
		{"zero limits", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 0, requestsPerWindow: 0}"), "the budget limits nothing"},
		{"negative tokens", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: -1, requestsPerWindow: 5}"), "spec.tokensPerWindow in body should be greater than or equal to 0"},
		{"unknown count", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, count: both}"), `spec.count: Unsupported value: "both"`},
		{"half a second", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, window: 1500ms}"), "window must be whole seconds"},
		{"no window", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, window: 0s}"), "window must be from 1s to 24h"},
		{"window over a day", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, window: 25h}"), "window must be from 1s to 24h"},
		{"window as a number", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, window: 60}"), ".spec.window: expected string"},
		{"window in days", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, window: 1d}"), "spec.window in body should match"},
		{"burst above 1", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, burst: 1.5}"), "spec.burst in body should be less than or equal to 1"},
		{"negative burst", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, burst: -0.1}"), "spec.burst in body should be greater than or equal to 0"},
		{"pool without namespace", tokenBudget(ns, "invalid", "spec: {tokensPerWindow: 5, selector: {pool: chat}}"), "spec.selector.pool in body should match"},
		{"tenant with a line break", tokenBudget(ns, "invalid", `spec: {tokensPerWindow: 5, selector: {tenant: "a\nb"}}`), "spec.selector.tenant in body should match"},
		{"no spec", tokenBudget(ns, "invalid", ""), "spec: Required value"},
		{"name not a DNS subdomain", tokenBudget(ns, "Acme_1", "spec: {tokensPerWindow: 5}"), "metadata.name: Invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := apply(ctx, c, tc.manifest)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.manifest)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("refused without saying %q:\n%s", tc.want, out)
			}
		})
	}

	out, err := c.Kubectl(ctx, "get", "tb", "full", "-n", ns, "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(out)); len(f) < 4 || f[0] != "full" || f[1] != "acme" || f[2] != "600000" || f[3] != "24h" {
		t.Errorf("kubectl get tb: %q, want columns NAME TENANT TOKENS WINDOW ... = full acme 600000 24h", out)
	}
}

// hubBudgets is what `hubctl get budgets -o json` says of the hub's budgets: name → limit.
func hubBudgets(t *testing.T, h *hub) map[string]string {
	t.Helper()
	var list struct {
		Budgets []struct {
			Spec struct {
				Name            string `json:"name"`
				TokensPerWindow string `json:"tokensPerWindow"`
			} `json:"spec"`
		} `json:"budgets"`
	}
	h.hubctlJSON(t, &list, "get", "budgets")
	out := map[string]string{}
	for _, b := range list.Budgets {
		out[b.Spec.Name] = b.Spec.TokensPerWindow
	}
	return out
}

// testHubTokenBudgets runs the hub as the token-budgets component deploys it: its Role is all
// its ServiceAccount may do (read the TokenBudgets of its namespace, write their status), and
// with that ServiceAccount's token the hub declares the namespace's budgets before it serves,
// follows a new one, and marks them Accepted.
func testHubTokenBudgets(t *testing.T, ctx context.Context, c *apiserver.Cluster, bins string) {
	installTokenBudgetCRD(t, ctx, c)
	if _, err := apply(ctx, c, join(objects(t, kustomize(t, "testdata/hub-token-budgets")))); err != nil {
		t.Fatal(err)
	}
	const spill = "spillway.io"
	checks := []struct {
		ns string
		access
		want bool
	}{
		{namespace, access{"get", spill, "tokenbudgets", ""}, true},
		{namespace, access{"list", spill, "tokenbudgets", ""}, true},
		{namespace, access{"watch", spill, "tokenbudgets", ""}, true},
		{namespace, access{"update", spill, "tokenbudgets", "status"}, true},
		{namespace, access{"patch", spill, "tokenbudgets", "status"}, true},
		{namespace, access{"create", spill, "tokenbudgets", ""}, false}, // the budgets are the operator's
		{namespace, access{"update", spill, "tokenbudgets", ""}, false},
		{namespace, access{"patch", spill, "tokenbudgets", ""}, false},
		{namespace, access{"delete", spill, "tokenbudgets", ""}, false},
		{namespace, access{"list", spill, "spillpolicies", ""}, false},
		{namespace, access{"get", "", "secrets", ""}, false},
		{namespace, access{"list", "", "configmaps", ""}, false},
		{"tokenbudget-schema", access{"list", spill, "tokenbudgets", ""}, false}, // its own namespace only
		{"kube-system", access{"list", spill, "tokenbudgets", ""}, false},
	}
	for _, ch := range checks {
		if got := mayIn(t, ctx, c, hubSA, ch.ns, ch.access)[0]; got != ch.want {
			t.Errorf("hub may %s in %s: %v, want %v", ch.access, ch.ns, got, ch.want)
		}
	}

	if _, err := apply(ctx, c, tokenBudget(namespace, "acme", "spec: {selector: {tenant: acme}, tokensPerWindow: 600000}")); err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, ctx, c, "spillway-hub")
	h := startHubOf(t, bins, "testdata/hub-token-budgets", []string{"spillway-hub." + namespace + ".svc"}, "--kubeconfig="+kubeconfig)
	// Ready means the budgets were read: acme is there at once.
	if got := hubBudgets(t, h); len(got) != 1 || got["acme"] != "600000" {
		t.Errorf("the hub started with budgets %v, want acme's 600000 tokens", got)
	}
	if _, err := apply(ctx, c, tokenBudget(namespace, "llama", "spec: {selector: {model: llama}, tokensPerWindow: 1000, window: 10s}")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the hub declares llama", func() error {
		h.proc.running()
		if got := hubBudgets(t, h); len(got) != 2 || got["llama"] != "1000" {
			return fmt.Errorf("budgets %v", got)
		}
		return nil
	})
	for _, name := range []string{"acme", "llama"} {
		testkit.Eventually(t, 30*time.Second, "the hub marks "+name+" Accepted", func() error {
			out, err := c.Kubectl(ctx, "get", "tokenbudget", name, "-n", namespace, "-o", "json")
			if err != nil {
				return err
			}
			var obj struct {
				Status struct {
					Conditions []struct{ Type, Status, Reason string } `json:"conditions"`
				} `json:"status"`
			}
			if err := json.Unmarshal(out, &obj); err != nil {
				return err
			}
			if !slices.ContainsFunc(obj.Status.Conditions, func(c struct{ Type, Status, Reason string }) bool {
				return c.Type == "Accepted" && c.Status == "True" && c.Reason == "Accepted"
			}) {
				return errors.New("conditions " + fmt.Sprint(obj.Status.Conditions))
			}
			return nil
		})
	}
}
