package fleetpb

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/pkg/budget"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// BudgetSet converts the declared budgets to their message.
func BudgetSet(s budget.Set) *pb.BudgetSet {
	out := &pb.BudgetSet{TenantHeader: s.TenantHeader, Budgets: make([]*pb.BudgetSpec, 0, len(s.Budgets))}
	for _, b := range s.Budgets {
		out.Budgets = append(out.Budgets, BudgetSpec(b))
	}
	return out
}

// BudgetSpec converts one budget to its message.
func BudgetSpec(b budget.Spec) *pb.BudgetSpec {
	return &pb.BudgetSpec{Name: b.Name, Tenant: b.Selector.Tenant, Objective: b.Selector.Objective, Model: b.Selector.Model,
		Pool: b.Selector.Pool, TokensPerWindow: b.Tokens, Count: string(b.Count), RequestsPerWindow: b.Requests,
		Window: durationpb.New(b.Window.Duration), Burst: b.Burst}
}

// BudgetSpecFrom converts a message to a budget (not validated).
func BudgetSpecFrom(m *pb.BudgetSpec) budget.Spec {
	return budget.Spec{Name: m.GetName(), Selector: budget.Selector{Tenant: m.GetTenant(), Objective: m.GetObjective(),
		Model: m.GetModel(), Pool: m.GetPool()}, Tokens: m.GetTokensPerWindow(), Count: budget.Count(m.GetCount()),
		Requests: m.GetRequestsPerWindow(), Window: budget.Duration{Duration: m.GetWindow().AsDuration()}, Burst: m.GetBurst()}
}

// BudgetSetFrom converts and validates the budgets the hub sent.
func BudgetSetFrom(m *pb.BudgetSet) (budget.Set, error) {
	s := budget.Set{TenantHeader: m.GetTenantHeader(), Budgets: make([]budget.Spec, 0, len(m.GetBudgets()))}
	for _, b := range m.GetBudgets() {
		s.Budgets = append(s.Budgets, BudgetSpecFrom(b))
	}
	s.Sort()
	if err := s.Validate(); err != nil {
		return budget.Set{}, err
	}
	return s, nil
}

// BudgetUsages converts a spoke's usage to its messages.
func BudgetUsages(us []budget.Usage) []*pb.BudgetUsage {
	out := make([]*pb.BudgetUsage, 0, len(us))
	for _, u := range us {
		out = append(out, BudgetUsage(u))
	}
	return out
}

// BudgetUsage converts one account's usage to its message.
func BudgetUsage(u budget.Usage) *pb.BudgetUsage {
	return &pb.BudgetUsage{Name: u.Name, WindowStartMs: u.Window, UsedTokens: u.UsedTokens, UsedRequests: u.UsedRequests,
		CeilingTokens: u.CeilingTokens, CeilingRequests: u.CeilingRequests, DemandTokensPerSecond: u.Demand,
		Share: u.Share, Refused: u.Refused}
}

// BudgetUsagesFrom converts and checks a spoke's report: every number finite and not negative,
// the share at most 1, names unique.
func BudgetUsagesFrom(ms []*pb.BudgetUsage) ([]budget.Usage, error) {
	out := make([]budget.Usage, 0, len(ms))
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		u := BudgetUsageFrom(m)
		if seen[u.Name] {
			return nil, fmt.Errorf("budget %q reported twice", u.Name)
		}
		seen[u.Name] = true
		if u.UsedTokens < 0 || u.UsedRequests < 0 || u.CeilingTokens < 0 || u.CeilingRequests < 0 || u.Refused < 0 ||
			!finite(u.Demand) || u.Demand < 0 || !finite(u.Share) || u.Share < 0 || u.Share > 1 {
			return nil, fmt.Errorf("budget %q: a negative or non-finite number, or a share above 1", u.Name)
		}
		out = append(out, u)
	}
	return out, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// BudgetUsageFrom converts a message to an account's usage.
func BudgetUsageFrom(m *pb.BudgetUsage) budget.Usage {
	return budget.Usage{Name: m.GetName(), Window: m.GetWindowStartMs(), UsedTokens: m.GetUsedTokens(), UsedRequests: m.GetUsedRequests(),
		CeilingTokens: m.GetCeilingTokens(), CeilingRequests: m.GetCeilingRequests(), Demand: m.GetDemandTokensPerSecond(),
		Share: m.GetShare(), Refused: m.GetRefused()}
}

// BudgetGrants converts grants to their messages.
func BudgetGrants(gs []budget.Grant) []*pb.BudgetGrant {
	out := make([]*pb.BudgetGrant, 0, len(gs))
	for _, g := range gs {
		out = append(out, BudgetGrant(g))
	}
	return out
}

// BudgetGrant converts a grant to its message.
func BudgetGrant(g budget.Grant) *pb.BudgetGrant {
	return &pb.BudgetGrant{Name: g.Name, WindowStartMs: g.Window, CeilingTokens: g.CeilingTokens,
		CeilingRequests: g.CeilingRequests, Share: g.Share}
}

// BudgetGrantsFrom converts grant messages.
func BudgetGrantsFrom(ms []*pb.BudgetGrant) []budget.Grant {
	out := make([]budget.Grant, 0, len(ms))
	for _, m := range ms {
		out = append(out, BudgetGrantFrom(m))
	}
	return out
}

// BudgetGrantFrom converts a grant message.
func BudgetGrantFrom(m *pb.BudgetGrant) budget.Grant {
	return budget.Grant{Name: m.GetName(), Window: m.GetWindowStartMs(), CeilingTokens: m.GetCeilingTokens(),
		CeilingRequests: m.GetCeilingRequests(), Share: m.GetShare()}
}
