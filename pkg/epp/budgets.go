package epp

import (
	"fmt"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/budget"
)

// resultBudget counts a request refused because a token budget it matches is exhausted here.
const resultBudget = "budget_exhausted"

// Budgets is the spoke's ledger of the fleet's token budgets (budget.Ledger), shared by every
// pool's EPP of the process: a tenant's budget counts across pools.
type Budgets interface {
	TenantHeader() string
	Admit(r budget.Request, t *budget.Ticket) *budget.Refusal
	Settle(t *budget.Ticket, s budget.Settled)
}

// chargeBudgets charges the request to the budgets it matches, from local state only (no call
// leaves the process), or refuses it with 429: Retry-After says when the window ends, and the
// x-ratelimit-* headers give the budget's limit, what this cluster may still admit of it and
// the time to the reset. A request another cluster spilled here was charged there, where it was
// admitted, and is not charged again. Explaining a request charges nothing.
func (s *Server) chargeBudgets(x *exchange) []*extprocv3.ProcessingResponse {
	if s.budgets == nil || x.explain != nil {
		return nil
	}
	x.hopped, x.hopChecked = s.hopped(x, s.hopKeysNow()), true
	if x.hopped {
		return nil
	}
	r := budget.Request{
		Attributes: budget.Attributes{Tenant: x.headers[s.budgets.TenantHeader()], Objective: x.headers[ObjectiveHeader],
			Model: x.req.Model, Pool: s.poolName},
		PromptTokens: int64(len(x.req.Prompt) / 4), MaxTokens: x.req.MaxTokens,
	}
	refusal := s.budgets.Admit(r, &x.ticket)
	if refusal == nil {
		return nil
	}
	s.count(x, "", resultBudget)
	kind := "requests"
	if refusal.Tokens {
		kind = "tokens"
	}
	reset := refusal.Reset.Round(time.Millisecond)
	return []*extprocv3.ProcessingResponse{immediate(429, "rate_limit_exceeded",
		fmt.Sprintf("token budget %s is used up here for now (%d %s per %s across the fleet); retry in %ss", refusal.Budget,
			refusal.Limit, kind, refusal.Window, refusal.RetryAfter()),
		[]*corev3.HeaderValueOption{
			setHeader("retry-after", refusal.RetryAfter()),
			setHeader("x-ratelimit-limit-"+kind, strconv.FormatInt(refusal.Limit, 10)),
			setHeader("x-ratelimit-remaining-"+kind, strconv.FormatInt(refusal.Remaining, 10)),
			setHeader("x-ratelimit-reset-"+kind, reset.String()),
			setHeader(BudgetHeader, refusal.Budget),
		})}
}

// BudgetHeader names, on a 429 of an exhausted token budget, the budget.
const BudgetHeader = "x-spillway-budget"

// settleBudgets ends the request's charges: what its response reported it used, or its
// reservation when the response reported nothing; a request that got no response, or an error
// status, releases them.
func (s *Server) settleBudgets(x *exchange) {
	if s.budgets == nil || !x.ticket.Held() {
		return
	}
	st := budget.Settled{Responded: x.routed && !x.firstByte.IsZero() && x.status < 400}
	if u, ok := x.usage.done(); ok && st.Responded {
		st.UsageKnown, st.PromptTokens, st.OutputTokens = true, int64(u.PromptTokens), int64(u.CompletionTokens)
	}
	s.budgets.Settle(&x.ticket, st)
}

// BudgetStates is what the budget metrics read (budget.Ledger).
type BudgetStates interface {
	States() []budget.State
}

// budgetCollector exports each declared budget's state at this spoke. Series exist only for
// budgets declared in the hub's configuration, never per tenant.
type budgetCollector struct{ l BudgetStates }

// NewBudgetCollector returns the collector of the spoke's budget metrics.
func NewBudgetCollector(l BudgetStates) prometheus.Collector { return budgetCollector{l} }

var (
	budgetAdmittedDesc = prometheus.NewDesc("spillway_epp_budget_admitted_requests_total",
		"Requests this spoke admitted and charged to the token budget.", []string{"budget"}, nil)
	budgetRefusedDesc = prometheus.NewDesc("spillway_epp_budget_refused_requests_total",
		"Requests this spoke matched to the token budget and refused (429) or, when another budget refused them, did not charge.", []string{"budget"}, nil)
	budgetTokensDesc = prometheus.NewDesc("spillway_epp_budget_tokens_total",
		"Tokens of finished requests this spoke charged to the budget (as the budget counts them).", []string{"budget"}, nil)
	budgetUsedDesc = prometheus.NewDesc("spillway_epp_budget_window_used_tokens",
		"Tokens charged to the budget at this spoke in the current window, reservations of requests in flight included.", []string{"budget"}, nil)
	budgetCeilingDesc = prometheus.NewDesc("spillway_epp_budget_window_ceiling_tokens",
		"The most tokens this spoke may charge to the budget in the current window (the hub's grant, or the share of a window it has not granted).", []string{"budget"}, nil)
	budgetShareDesc = prometheus.NewDesc("spillway_epp_budget_share_ratio",
		"The share of the budget this spoke takes in a window the hub has not granted.", []string{"budget"}, nil)
	budgetOverdrawDesc = prometheus.NewDesc("spillway_epp_budget_overdraw_tokens_total",
		"Tokens finished requests used beyond what they reserved at admission (a prompt the estimate undercounted, or output without max_tokens above the default): the only way the fleet's admissions pass the budget.", []string{"budget"}, nil)
	budgetLimitDesc = prometheus.NewDesc("spillway_epp_budget_limit_tokens",
		"The budget's token limit per window across the fleet.", []string{"budget"}, nil)
)

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{budgetAdmittedDesc, budgetRefusedDesc, budgetTokensDesc, budgetUsedDesc, budgetCeilingDesc, budgetShareDesc, budgetLimitDesc, budgetOverdrawDesc} {
		ch <- d
	}
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.l.States() {
		ch <- prometheus.MustNewConstMetric(budgetAdmittedDesc, prometheus.CounterValue, float64(st.AdmittedTotal), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetRefusedDesc, prometheus.CounterValue, float64(st.RefusedTotal), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetTokensDesc, prometheus.CounterValue, float64(st.TokensTotal), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(st.UsedTokens), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetCeilingDesc, prometheus.GaugeValue, float64(st.CeilingTokens), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetShareDesc, prometheus.GaugeValue, st.Share, st.Name)
		ch <- prometheus.MustNewConstMetric(budgetOverdrawDesc, prometheus.CounterValue, float64(st.OverdrawTotal), st.Name)
		ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(st.Spec.Tokens), st.Name)
	}
}
