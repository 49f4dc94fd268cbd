package hubclient

import (
	"fmt"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestBudgetsFollowTheHub: the ledger takes the hub's declarations and grants; the client
// reports the ledger's accounts at once when a session starts and then every announced
// interval; a hub that announces no interval declares no budgets, and the ledger is emptied.
func TestBudgetsFollowTheHub(t *testing.T) {
	h := startFakeHub(t)
	h.budgetInterval = 20 * time.Millisecond
	ledger := budget.NewLedger(budget.LedgerOptions{})
	c := h.client(t, "east", "east")
	c.opts.Budgets = ledger
	run(t, c)
	reports := func(want func(*pb.BudgetReport) bool) func() error {
		return func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, r := range h.budgetReports {
				if want(r) {
					return nil
				}
			}
			return fmt.Errorf("%d reports, none as wanted", len(h.budgetReports))
		}
	}
	testkit.Eventually(t, 5*time.Second, "a report at the session's start", reports(func(r *pb.BudgetReport) bool { return len(r.GetBudgets()) == 0 }))

	set, err := budget.ParseFile([]byte("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: acme}\nspec: {selector: {tenant: acme}, tokensPerWindow: 1000}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	w := budget.WindowStart(time.Now(), time.Minute)
	h.push <- &pb.SyncResponse{Msg: &pb.SyncResponse_Budgets{Budgets: &pb.Budgets{Definitions: fleetpb.BudgetSet(set),
		Grants: []*pb.BudgetGrant{{Name: "acme", WindowStartMs: w, CeilingTokens: 400, Share: 0.4}}}}}
	testkit.Eventually(t, 5*time.Second, "the ledger holds acme's grant", func() error {
		st := ledger.States()
		if len(st) != 1 || st[0].Name != "acme" || !st[0].Granted || st[0].Share != 0.4 {
			return fmt.Errorf("states %+v", st)
		}
		return nil
	})
	testkit.Eventually(t, 5*time.Second, "a report of acme's account", reports(func(r *pb.BudgetReport) bool {
		bs := r.GetBudgets()
		return len(bs) == 1 && bs[0].GetName() == "acme" && bs[0].GetCeilingTokens() == 400 && bs[0].GetShare() == 0.4
	}))

	// A session with a hub that declares no budgets empties the ledger.
	h.mu.Lock()
	h.budgetInterval = 0
	h.mu.Unlock()
	h.kick()
	testkit.Eventually(t, 5*time.Second, "the ledger emptied", testkit.True(func() bool { return len(ledger.States()) == 0 }))
}
