package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

var budgetColumns = []column{{name: "NAME"}, {name: "SELECTOR"}, {name: "LIMIT"}, {name: "WINDOW"}, {name: "USED"},
	{name: "CLUSTER"}, {name: "CLUSTER-USED"}, {name: "CEILING"}, {name: "SHARE"}, {name: "DEMAND", wide: true}, {name: "REFUSED", wide: true}}

// getBudgets lists the fleet's token budgets (or the one named): each budget's limit and what
// the fleet used of it in the current window, then one row per spoke process drawing on it with
// its usage, its ceiling and its share (docs/budgets.md). --region keeps the members of a region's
// clusters.
func (o *options) getBudgets(g *getOptions, name string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		resp, err := c.ListBudgets(ctx, &pb.ListBudgetsRequest{})
		if err != nil {
			return err
		}
		if name != "" {
			resp.Budgets = slices.DeleteFunc(resp.Budgets, func(b *pb.BudgetStatus) bool { return b.GetSpec().GetName() != name })
			if len(resp.Budgets) == 0 {
				return status.Errorf(codes.NotFound, "budget %q: the hub declares no such budget", name)
			}
		}
		if g.region != "" {
			clusters, err := allClusters(ctx, c)
			if err != nil {
				return err
			}
			regions := map[string]string{}
			for _, cl := range clusters.GetClusters() {
				regions[cl.GetInfo().GetClusterId()] = cl.GetInfo().GetRegion()
			}
			for _, b := range resp.Budgets {
				b.Members = slices.DeleteFunc(b.Members, func(m *pb.BudgetMember) bool { return regions[m.GetClusterId()] != g.region })
			}
		}
		if done, err := o.structured(w, resp); done {
			return err
		}
		var rows [][]string
		for _, b := range resp.GetBudgets() {
			s := b.GetSpec()
			head := []string{s.GetName(), budgetSelector(s), budgetLimit(s), s.GetWindow().AsDuration().String(), budgetUsed(s, b.GetUsedTokens(), b.GetUsedRequests())}
			if len(b.GetMembers()) == 0 {
				rows = append(rows, append(head, "<none>", "-", "-", "-", "-", "-"))
				continue
			}
			for i, m := range budgetMemberRows(b) {
				if i > 0 {
					head = []string{"", "", "", "", ""}
				}
				rows = append(rows, append(head, m[1:]...))
			}
		}
		return o.printTable(w, budgetColumns, rows)
	}
}

// describeBudgetColumns are describe cluster's budget table: the cluster's draws on each budget.
var describeBudgetColumns = []column{{name: "BUDGET"}, {name: "CLUSTER"}, {name: "USED"}, {name: "CEILING"}, {name: "SHARE"},
	{name: "DEMAND"}, {name: "REFUSED"}}

// budgetMemberRows are a budget's member rows: its name, then each member's cluster, usage and
// ceiling in the budget's window ("-" when its last report is of another), share, demand and
// refusals.
func budgetMemberRows(b *pb.BudgetStatus) [][]string {
	s := b.GetSpec()
	var rows [][]string
	for _, m := range b.GetMembers() {
		u, gr := m.GetUsage(), m.GetGranted()
		used, ceiling := "-", "-"
		if u.GetWindowStartMs() == b.GetWindowStartMs() {
			used = budgetUsed(s, u.GetUsedTokens(), u.GetUsedRequests())
			ceiling = budgetUsed(s, u.GetCeilingTokens(), u.GetCeilingRequests())
		}
		rows = append(rows, []string{s.GetName(), m.GetClusterId(), used, ceiling, strconv.FormatFloat(gr.GetShare(), 'f', 2, 64),
			fmt.Sprintf("%.0f/s", u.GetDemandTokensPerSecond()), strconv.FormatInt(u.GetRefused(), 10)})
	}
	return rows
}

// budgetSelector renders a budget's selector: key=value pairs, or <all>.
func budgetSelector(s *pb.BudgetSpec) string {
	var parts []string
	for _, kv := range [][2]string{{"tenant", s.GetTenant()}, {"model", s.GetModel()}, {"objective", s.GetObjective()}, {"pool", s.GetPool()}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	if len(parts) == 0 {
		return "<all>"
	}
	return strings.Join(parts, ",")
}

// budgetLimit renders the limits: "60000 total tokens", "100 requests", or both.
func budgetLimit(s *pb.BudgetSpec) string {
	var parts []string
	if s.GetTokensPerWindow() > 0 {
		parts = append(parts, fmt.Sprintf("%d %s tokens", s.GetTokensPerWindow(), s.GetCount()))
	}
	if s.GetRequestsPerWindow() > 0 {
		parts = append(parts, fmt.Sprintf("%d requests", s.GetRequestsPerWindow()))
	}
	return strings.Join(parts, ", ")
}

// budgetUsed renders tokens and requests as the budget limits them.
func budgetUsed(s *pb.BudgetSpec, tokens, requests int64) string {
	var parts []string
	if s.GetTokensPerWindow() > 0 {
		parts = append(parts, strconv.FormatInt(tokens, 10))
	}
	if s.GetRequestsPerWindow() > 0 {
		parts = append(parts, strconv.FormatInt(requests, 10)+" req")
	}
	return strings.Join(parts, ", ")
}
