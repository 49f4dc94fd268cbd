package ctl

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/budget"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// budgetFleet is a hub declaring two budgets, with two clusters reporting their usage of acme's
// over the real SyncService, on a clock that stands still.
func budgetFleet(t *testing.T) *hubtest.Hub {
	t.Helper()
	now := time.Unix(1_800_000_030, 0)
	alloc := budget.NewAllocator(budget.AllocatorOptions{Now: func() time.Time { return now }, Settle: -1})
	set, err := budget.ParseFile([]byte(`apiVersion: spillway.io/v1alpha1
kind: TokenBudget
metadata: {name: acme}
spec: {selector: {tenant: acme}, tokensPerWindow: 60000}
---
apiVersion: spillway.io/v1alpha1
kind: TokenBudget
metadata: {name: llama-requests}
spec: {selector: {model: llama, pool: llm/chat}, requestsPerWindow: 500, window: 10s}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	alloc.SetBudgets(set)
	h := hubtest.StartWith(t, 10*time.Second, hubtest.Options{Budgets: alloc, BudgetReportInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	window := budget.WindowStart(now, time.Minute)
	for i, c := range []*pb.ClusterInfo{{ClusterId: "us-east-1", Region: "us-east"}, {ClusterId: "eu-west-1", Region: "eu-west"}} {
		cli := h.SyncAs(c.GetClusterId())
		if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: c}); err != nil {
			t.Fatal(err)
		}
		st, err := cli.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		usage := &pb.BudgetUsage{Name: "acme", WindowStartMs: window, UsedTokens: int64(12000 * (i + 1)), CeilingTokens: 30000,
			DemandTokensPerSecond: float64(400 * (i + 1)), Share: 0.5, Refused: int64(3 * i)}
		for _, m := range []*pb.SyncRequest{
			{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: c.GetClusterId(), SpokeIncarnation: "i"}}},
			{Msg: &pb.SyncRequest_Budgets{Budgets: &pb.BudgetReport{Budgets: []*pb.BudgetUsage{usage}}}},
		} {
			if err := st.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		// The hub's first word on budgets declares them; its answer to the report grants.
		var defs, grants bool
		for !defs || !grants {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			b := m.GetBudgets()
			if b == nil {
				continue
			}
			if d := b.GetDefinitions(); d != nil {
				if defs || grants || len(d.GetBudgets()) != 2 || d.GetTenantHeader() != budget.DefaultTenantHeader {
					t.Fatalf("definitions %v (after definitions %v, grants %v)", d, defs, grants)
				}
				defs = true
				continue
			}
			grants = len(b.GetGrants()) == 2
		}
	}
	return h
}

func TestGetBudgets(t *testing.T) {
	h := budgetFleet(t)
	for name, args := range map[string][]string{
		"budgets.table":       {"get", "budgets"},
		"budgets.wide":        {"get", "budgets", "-o", "wide"},
		"budgets.yaml":        {"get", "budgets", "-o", "yaml"},
		"budget-named-region": {"get", "budget", "acme", "--region", "eu-west"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := as(t, h, hubtest.User("viewer"), args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, got)
			}
			testkit.Golden(t, filepath.Join("testdata", name), []byte(got))
		})
	}
	if got, err := as(t, h, hubtest.User("viewer"), "get", "budget", "nothing"); err == nil {
		t.Fatalf("an unknown budget listed: %s", got)
	} else if want := `budget "nothing"`; !strings.Contains(got+err.Error(), want) {
		t.Fatalf("error %v %s, want one naming %s", err, got, want)
	}
}

// TestDescribeClusterBudgets: describe cluster shows the cluster's own draws on each budget, as
// get budgets does for every cluster.
func TestDescribeClusterBudgets(t *testing.T) {
	h := budgetFleet(t)
	var got string
	// The registered cluster reaches the answering replica's view through its watch.
	testkit.Eventually(t, 5*time.Second, "eu-west-1 described", func() error {
		var err error
		got, err = as(t, h, hubtest.User("viewer"), "describe", "cluster", "eu-west-1")
		return err
	})
	_, table, ok := strings.Cut(got, "Budgets:\n")
	table, _, _ = strings.Cut(table, "Events:")
	if !ok {
		t.Fatalf("no budget table in\n%s", got)
	}
	testkit.Golden(t, filepath.Join("testdata", "describe-cluster-budgets"), []byte(table))
	if strings.Contains(table, "us-east-1") {
		t.Fatalf("another cluster's draws in eu-west-1's table:\n%s", table)
	}
}
