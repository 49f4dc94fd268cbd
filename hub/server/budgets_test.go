package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/budget"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// acmeBudget is tenant acme's budget of 60,000 tokens a minute.
func acmeBudget(t *testing.T) budget.Set {
	t.Helper()
	set, err := budget.ParseFile([]byte("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: acme}\nspec: {selector: {tenant: acme}, tokensPerWindow: 60000}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestBudgetsAcrossReplicas: a spoke of replica x reports its use of a budget; replica y
// learns it, and the ceiling y grants its own spoke leaves room for what x's spoke holds: the
// two ceilings add up to no more than the budget. A report that breaks the rules ends the
// stream.
func TestBudgetsAcrossReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	set := acmeBudget(t)
	allocs := []*budget.Allocator{budget.NewAllocator(budget.AllocatorOptions{Settle: -1}), budget.NewAllocator(budget.AllocatorOptions{Settle: -1})}
	for _, a := range allocs {
		a.SetBudgets(set)
	}
	x := startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-x", Budgets: allocs[0], BudgetReportInterval: time.Second}})
	y := startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-y", Budgets: allocs[1], BudgetReportInterval: time.Second}})
	x.register(t, ctx, "a", "10.0.0.1:443")
	y.register(t, ctx, "b", "10.0.0.2:443")
	list := &hubList{hubs: map[string]registry.HubRecord{
		"hub-x": {ID: "hub-x", Address: x.AdminAddr, Incarnation: x.Model.Incarnation()},
		"hub-y": {ID: "hub-y", Address: y.AdminAddr, Incarnation: y.Model.Incarnation()},
	}, events: make(chan []registry.HubEvent)}
	runPeers(t, y.Hub, server.PeerOptions{Hubs: list, Dial: dialAs(t, x.Hub, "hub-y"), FirstSnapshotWait: 10 * time.Second})
	runPeers(t, x.Hub, server.PeerOptions{Hubs: list, Dial: dialAs(t, y.Hub, "hub-x"), FirstSnapshotWait: 10 * time.Second})

	w := budget.WindowStart(time.Now(), time.Minute)
	report := func(used, ceiling int64) *pb.SyncRequest {
		return &pb.SyncRequest{Msg: &pb.SyncRequest_Budgets{Budgets: &pb.BudgetReport{Budgets: []*pb.BudgetUsage{{
			Name: "acme", WindowStartMs: w, UsedTokens: used, CeilingTokens: ceiling, DemandTokensPerSecond: 100, Share: 0.5}}}}}
	}
	// grant sends a report and returns the ceiling that answers it.
	grant := func(st pb.SyncService_SyncClient, used, ceiling int64) int64 {
		t.Helper()
		if err := st.Send(report(used, ceiling)); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if b := m.GetBudgets(); b != nil && b.GetDefinitions() == nil && len(b.GetGrants()) == 1 {
				return b.GetGrants()[0].GetCeilingTokens()
			}
		}
	}
	// known: h knows that cluster reported the ceiling (or, with granted, was granted it).
	known := func(h *budget.Allocator, cluster string, ceiling int64, granted bool) func() error {
		return func() error {
			for _, st := range h.Statuses() {
				for _, m := range st.Members {
					if m.Cluster == cluster && (!granted && m.CeilingTokens == ceiling || granted && m.Granted.CeilingTokens == ceiling) {
						return nil
					}
				}
			}
			return fmt.Errorf("%s's ceiling %d (granted %v) not known: %+v", cluster, ceiling, granted, h.Statuses())
		}
	}
	stA := openSession(t, ctx, x.SyncAs("a"), "a")
	// b's session starts once hub-y knows a's: sessions that start on two replicas within the
	// relay's latency may both be granted from the same remainder (docs/budgets.md).
	testkit.Eventually(t, 10*time.Second, "a's session known at hub-y", func() error {
		if st := allocs[1].Statuses(); len(st[0].Members) == 0 {
			return fmt.Errorf("no member")
		}
		return nil
	})
	stB := openSession(t, ctx, y.SyncAs("b"), "b")
	// a used 20,000 and asks at x; b starts at y. Round by round each applies its grant and
	// reports it; the ceilings in force never add up to more than the budget, and b gets a part
	// once a's ceiling came down.
	ceilA, ceilB := int64(50000), int64(0)
	for round := 0; ceilB == 0; round++ {
		if round == 5 {
			t.Fatalf("b still has no ceiling after %d rounds (a's is %d)", round, ceilA)
		}
		ceilA = grant(stA, 20000, ceilA)
		testkit.Eventually(t, 10*time.Second, "a's grant known at hub-y", known(allocs[1], "a", ceilA, true))
		// a reports the ceiling it applied, and hub-y learns it before b asks.
		if err := stA.Send(report(20000, ceilA)); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "a's ceiling in force known at hub-y", known(allocs[1], "a", ceilA, false))
		ceilB = grant(stB, 0, ceilB)
		testkit.Eventually(t, 10*time.Second, "b's grant known at hub-x", known(allocs[0], "b", ceilB, true))
		if ceilA+ceilB > 60000 {
			t.Fatalf("round %d: ceilings %d (a, at hub-x) and %d (b, at hub-y) add up to more than 60,000", round, ceilA, ceilB)
		}
	}
	// A share above 1 is refused.
	bad := report(0, 0)
	bad.GetBudgets().GetBudgets()[0].Share = 2
	if err := stB.Send(bad); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stB.Recv(); err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("a share of 2 ended the stream with %v, want InvalidArgument", err)
			}
			break
		}
	}
}
