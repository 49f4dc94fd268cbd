package epp

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// budgetLedger is a ledger with tenant acme's budget of 100 tokens per minute, its whole
// ceiling granted here, at clock now.
func budgetLedger(t *testing.T, now func() time.Time) *budget.Ledger {
	t.Helper()
	set, err := budget.ParseFile([]byte("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: acme}\nspec: {selector: {tenant: acme}, tokensPerWindow: 100}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	l := budget.NewLedger(budget.LedgerOptions{Now: now})
	l.SetBudgets(set)
	l.Grant([]budget.Grant{{Name: "acme", Window: budget.WindowStart(now(), time.Minute), CeilingTokens: 100, Share: 1}})
	return l
}

// budgetExchange is a parsed request of tenant (none when empty) with max_tokens.
func budgetExchange(tenant string, maxTokens int64) *exchange {
	x := &exchange{headers: map[string]string{}, duplexReq: true,
		req: request.Request{Model: "m", Prompt: "12345678", MaxTokens: maxTokens}}
	if tenant != "" {
		x.headers[budget.DefaultTenantHeader] = tenant
	}
	return x
}

func usedTokens(l *budget.Ledger) int64 { return l.States()[0].UsedTokens }

// TestChargeBudgets: a request of the tenant is charged its prompt estimate and max_tokens;
// once the ceiling is reached the next is refused with 429, Retry-After from the window's end and
// the x-ratelimit-* headers; a request of no budget passes; settling replaces the reservation
// with the response's usage, and a request that ends without a response releases it.
func TestChargeBudgets(t *testing.T) {
	now := time.Unix(1_800_000_015, 0) // 15 s into a minute
	l := budgetLedger(t, func() time.Time { return now })
	s := newTestServer(t, stageObjectives, fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{})}},
		func(o *Options) { o.Budgets = l })

	first := budgetExchange("acme", 40) // 8 bytes of prompt: 2 tokens, and 40
	if out := s.chargeBudgets(first); out != nil {
		t.Fatalf("refused: %v", out)
	}
	if got := usedTokens(l); got != 42 {
		t.Fatalf("charged %d, want 42", got)
	}
	second := budgetExchange("acme", 50)
	if out := s.chargeBudgets(second); out != nil {
		t.Fatalf("refused: %v", out)
	}
	third := budgetExchange("acme", 10) // 94 + 12 > 100
	out := s.chargeBudgets(third)
	if immediateStatus(out) != 429 {
		t.Fatalf("status %d, want 429", immediateStatus(out))
	}
	hs := out[0].GetImmediateResponse().GetHeaders().GetSetHeaders()
	for h, want := range map[string]string{"retry-after": "45", "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "6",
		"x-ratelimit-reset-tokens": "45s", BudgetHeader: "acme"} {
		if got := headerOf(hs, h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if got := requests(s, "", "", resultBudget); got != 1 {
		t.Errorf("%v requests counted %s, want 1", got, resultBudget)
	}
	// GIE's metrics count it as an error, never as a request running.
	if got := testutil.ToFloat64(s.metrics.gie.errors.WithLabelValues("other", "", gieResourceExhausted)); got != 1 {
		t.Errorf("GIE's request_error_total{ResourceExhausted} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.gie.running.WithLabelValues("other")); got != 0 {
		t.Errorf("GIE's running requests = %v after a refusal, want 0", got)
	}
	if out := s.chargeBudgets(budgetExchange("", 10_000)); out != nil {
		t.Fatalf("a request of no budget refused: %v", out)
	}
	if out := s.chargeBudgets(budgetExchange("other", 10_000)); out != nil {
		t.Fatalf("another tenant's request refused: %v", out)
	}

	// The first streamed a response that used 2 + 5: 35 come back.
	first.routed, first.firstByte, first.status = true, now, 200
	first.usage.write([]byte(`{"usage":{"prompt_tokens":2,"completion_tokens":5}}`))
	s.settleBudgets(first)
	if got := usedTokens(l); got != 7+52 {
		t.Fatalf("after the first settled: %d charged, want 59", got)
	}
	// The second was refused downstream (shed, say) and never routed: released.
	s.settleBudgets(second)
	if got := usedTokens(l); got != 7 {
		t.Fatalf("after the second was released: %d charged, want 7", got)
	}
	// A response with an error status releases too; one without usage keeps its reservation.
	failed := budgetExchange("acme", 10)
	if out := s.chargeBudgets(failed); out != nil {
		t.Fatal(out)
	}
	failed.routed, failed.firstByte, failed.status = true, now, 503
	s.settleBudgets(failed)
	silent := budgetExchange("acme", 10)
	if out := s.chargeBudgets(silent); out != nil {
		t.Fatal(out)
	}
	silent.routed, silent.firstByte, silent.status = true, now, 200
	s.settleBudgets(silent)
	if got := usedTokens(l); got != 7+12 {
		t.Fatalf("after a failed and a silent response: %d charged, want 19", got)
	}
}

// TestBudgetsChargeWhereAdmitted: a request another cluster spilled here (a hop marker that
// verifies) was charged there and is not charged again; a forged marker is charged.
func TestBudgetsChargeWhereAdmitted(t *testing.T) {
	const self = "us-west-1"
	l := budgetLedger(t, func() time.Time { return hopT0 })
	s := newTestServer(t, stageObjectives, fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{})}},
		func(o *Options) {
			o.ClusterID, o.HopKeys, o.Now, o.Budgets = self, keySet(hopFleet), func() time.Time { return hopT0 }, l
		})
	hopped := budgetExchange("acme", 10)
	hopped.headers[HopHeader] = mustSign(t, hopKeyNew, "us-east-1", self, hopT0)
	if out := s.chargeBudgets(hopped); out != nil || !hopped.hopped || hopped.ticket.Held() {
		t.Fatalf("a spilled request: answer %v, hopped %v, charged %v", out, hopped.hopped, hopped.ticket.Held())
	}
	if got := usedTokens(l); got != 0 {
		t.Fatalf("a spilled request charged %d here", got)
	}
	forged := budgetExchange("acme", 10)
	forged.headers[HopHeader] = mustSign(t, hopKeyNew, "us-east-1", "ap-south-1", hopT0)
	if out := s.chargeBudgets(forged); out != nil || forged.hopped || usedTokens(l) != 12 {
		t.Fatalf("a marker for another cluster: answer %v, hopped %v, charged %d", out, forged.hopped, usedTokens(l))
	}
}

// BenchmarkBudgetsPathCost is the request path's cost of token budgets: one request phase
// through Process (headers, body, decision, answer; the stream's end settles the charge), on an
// EPP without budgets and on one with 1,000 declared (a budget per tenant, each request matching
// its tenant's and the model's), alternating request by request so that both see the same
// machine. It reports each one's p50 and p99 and the ratio of the p99s (make bench-budgets
// writes it to docs/benchmarks/budgets.json).
func BenchmarkBudgetsPathCost(b *testing.B) {
	const n = 100
	var eps []Endpoint
	for i := range n {
		eps = append(eps, readyEndpoint(fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250), modelmetrics.Metrics{WaitingQueue: i % 5}))
	}
	now := time.Now()
	var doc strings.Builder
	for i := range 999 {
		fmt.Fprintf(&doc, "apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: t%d}\nspec: {selector: {tenant: t%d}, tokensPerWindow: 1000000000000}\n---\n", i, i)
	}
	doc.WriteString("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: model-m}\nspec: {selector: {model: m}, tokensPerWindow: 1000000000000}\n")
	set, err := budget.ParseFile([]byte(doc.String()), "")
	if err != nil {
		b.Fatal(err)
	}
	ledger := budget.NewLedger(budget.LedgerOptions{})
	ledger.SetBudgets(set)
	var grants []budget.Grant
	for _, s := range set.Budgets {
		grants = append(grants, budget.Grant{Name: s.Name, Window: budget.WindowStart(now, s.Window.Duration), CeilingTokens: 1 << 50, Share: 1})
	}
	ledger.Grant(grants)
	servers := make([]*Server, 2)
	for i := range servers {
		o := Options{Pool: testPool, Settings: DefaultSettings(), Datastore: fakeDatastore{testPool: eps}}
		if i == 1 {
			o.Budgets = ledger
		}
		if servers[i], err = New(o); err != nil {
			b.Fatal(err)
		}
	}
	prefix := strings.Repeat("You are a benchmark assistant. ", 70)
	bodies := make([]*extprocv3.ProcessingRequest, 256)
	for i := range bodies {
		bodies[i] = requestBody(fmt.Sprintf(`{"model":"m","max_tokens":64,"messages":[{"role":"system","content":%q},{"role":"user","content":"q %d"}]}`, prefix, i), true)
	}
	headers := make([]*extprocv3.ProcessingRequest, 1000)
	for i := range headers {
		headers[i] = requestHeaders(":method", "POST", ":path", "/v1/chat/completions", ":authority", "gw", "content-type", "application/json",
			budget.DefaultTenantHeader, fmt.Sprintf("t%d", i))
	}
	took := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	st := &memStream{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, srv := range servers {
			st.in = append(st.in[:0], headers[i%len(headers)], bodies[i%len(bodies)])
			st.out = st.out[:0]
			t0 := time.Now()
			err := srv.Process(st)
			took[k] = append(took[k], time.Since(t0))
			if err != nil || len(st.out) == 0 || st.out[0].GetImmediateResponse() != nil {
				b.Fatal(err, st.out)
			}
		}
	}
	b.StopTimer()
	q := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(ds[min(int(p*float64(len(ds))), len(ds)-1)].Nanoseconds())
	}
	b.ReportMetric(q(took[0], 0.5), "p50-ns-none")
	b.ReportMetric(q(took[0], 0.99), "p99-ns-none")
	b.ReportMetric(q(took[1], 0.5), "p50-ns-budgets")
	b.ReportMetric(q(took[1], 0.99), "p99-ns-budgets")
	b.ReportMetric(q(took[1], 0.99)/q(took[0], 0.99), "p99-ratio")
}
