package budget

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock(sec int64) *fakeClock      { return &fakeClock{t: time.Unix(sec, 0)} }
func spec(name string, tokens int64) Spec {
	s := Spec{Name: name, Tokens: tokens}
	s.Complete()
	return s
}
func setOf(specs ...Spec) Set { s := Set{Budgets: specs}; s.Sort(); return s }
func tenantReq(t string, in, out int64) Request {
	return Request{Attributes: Attributes{Tenant: t, Model: "m", Pool: "ns/p"}, PromptTokens: in, MaxTokens: out}
}

func TestParseFile(t *testing.T) {
	good := `
# the fleet's budgets
apiVersion: spillway.io/v1alpha1
kind: TokenBudget
metadata: {name: acme}
spec:
  selector: {tenant: acme}
  tokensPerWindow: 60000
---
apiVersion: spillway.io/v1alpha1
kind: TokenBudget
metadata: {name: llama-fleet}
spec:
  selector: {model: llama, pool: llm/pool-a}
  tokensPerWindow: 1000
  count: output
  requestsPerWindow: 10
  window: 10s
`
	set, err := ParseFile([]byte(good), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Budgets) != 2 || set.TenantHeader != DefaultTenantHeader {
		t.Fatalf("set %+v", set)
	}
	a, l := set.Budgets[0], set.Budgets[1]
	if a.Name != "acme" || a.Count != CountTotal || a.Window.Duration != time.Minute || a.Selector.Tenant != "acme" {
		t.Fatalf("acme %+v", a)
	}
	if l.Name != "llama-fleet" || l.Count != CountOutput || l.Window.Duration != 10*time.Second || l.Requests != 10 || l.Selector.Pool != "llm/pool-a" {
		t.Fatalf("llama-fleet %+v", l)
	}
	for _, c := range []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(good, "count: output", "cuont: output", 1), "unknown field"},
		{"other kind", strings.Replace(good, "kind: TokenBudget\nmetadata: {name: acme}", "kind: SpillPolicy\nmetadata: {name: acme}", 1), "not spillway.io/v1alpha1 TokenBudget"},
		{"twice", strings.Replace(good, "name: llama-fleet", "name: acme", 1), "declared twice"},
		{"no limit", strings.Replace(good, "tokensPerWindow: 60000", "", 1), "limit nothing"},
		{"bad window", strings.Replace(good, "window: 10s", "window: 1500ms", 1), "whole seconds"},
		{"bad count", strings.Replace(good, "count: output", "count: both", 1), "none of total"},
		{"bad pool", strings.Replace(good, "pool: llm/pool-a", "pool: pool-a", 1), "namespace/name"},
		{"bad name", strings.Replace(good, "name: acme", "name: Acme_1", 1), "DNS subdomain"},
		{"not yaml", "{", "document 1"},
	} {
		_, err := ParseFile([]byte(c.doc), "")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one that says %q", c.name, err, c.want)
		}
	}
	if _, err := ParseFile([]byte(good), "X-Tenant"); err == nil {
		t.Error("an upper-case tenant header was taken")
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("apiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: a}\nspec: {tokensPerWindow: 5}\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseFile(data, "")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := set.Validate(); err != nil {
			t.Fatalf("a parsed set does not validate: %v", err)
		}
	})
}

// TestParseSpec: one TokenBudget's spec, as the hub reads it from its cluster, is read and
// checked as a budgets file's document is: defaults filled in, every problem refused with the
// budget's name.
func TestParseSpec(t *testing.T) {
	s, err := ParseSpec("acme", []byte(`{"selector":{"tenant":"acme"},"tokensPerWindow":60000,"burst":0.2}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Name: "acme", Selector: Selector{Tenant: "acme"}, Tokens: 60000, Count: CountTotal, Window: Duration{DefaultWindow}, Burst: 0.2}
	if s != want {
		t.Fatalf("ParseSpec = %+v, want %+v", s, want)
	}
	for _, c := range []struct{ name, budget, spec, want string }{
		{"unknown field", "acme", `{"tokensPerWindow":5,"cuont":"output"}`, `unknown field "cuont"`},
		{"no limit", "acme", `{"selector":{"tenant":"acme"}}`, "limit nothing"},
		{"no spec", "acme", ``, "limit nothing"},
		{"null spec", "acme", `null`, "limit nothing"},
		{"bad window", "acme", `{"tokensPerWindow":5,"window":"1500ms"}`, "whole seconds"},
		{"window not a string", "acme", `{"tokensPerWindow":5,"window":60}`, "a duration is a string"},
		{"bad count", "acme", `{"tokensPerWindow":5,"count":"both"}`, "none of total"},
		{"burst above 1", "acme", `{"tokensPerWindow":5,"burst":1.5}`, "burst 1.5"},
		{"bad name", "Acme_1", `{"tokensPerWindow":5}`, "DNS subdomain"},
		{"not an object", "acme", `[1]`, "spec:"},
		{"two objects", "acme", `{"tokensPerWindow":5} {}`, "data after the object"},
	} {
		_, err := ParseSpec(c.budget, []byte(c.spec))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"`+c.budget+`"`) {
			t.Errorf("%s: error %v, want one that names %q and says %q", c.name, err, c.budget, c.want)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add("acme", []byte(`{"selector":{"tenant":"acme","pool":"llm/chat"},"tokensPerWindow":600000,"count":"input","window":"30s","burst":0.2}`))
	f.Add("a", []byte(`{"requestsPerWindow":1}`))
	f.Fuzz(func(t *testing.T, name string, spec []byte) {
		s, err := ParseSpec(name, spec)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := s.Validate(); err != nil || s.Name != name {
			t.Fatalf("a parsed spec %+v does not validate (%v) or lost its name %q", s, err, name)
		}
	})
}

// TestLedgerAdmitsToItsCeiling: a request is admitted while its reservation fits under the
// ceiling; the refusal names the budget, its limit, what remains and when the window ends; the
// settled usage replaces the reservation, and a request without a response releases it.
func TestLedgerAdmitsToItsCeiling(t *testing.T) {
	clk := newClock(1_000_040) // 20 s into a minute window
	l := NewLedger(LedgerOptions{Now: clk.now})
	l.SetBudgets(setOf(spec("acme", 1000), spec("other", 1000)))
	l.SetBudgets(setOf(spec("acme", 1000), Spec{Name: "other", Selector: Selector{Tenant: "other"}, Tokens: 10, Count: CountTotal, Window: Duration{time.Minute}}))
	w := WindowStart(clk.now(), time.Minute)
	l.Grant([]Grant{{Name: "acme", Window: w, CeilingTokens: 500, Share: 0.5}})

	var t1, t2, t3 Ticket
	if r := l.Admit(tenantReq("acme", 100, 200), &t1); r != nil {
		t.Fatalf("refused %+v", r)
	}
	if r := l.Admit(tenantReq("acme", 100, 100), &t2); r != nil {
		t.Fatalf("refused %+v", r)
	}
	r := l.Admit(tenantReq("acme", 100, 1), &t3)
	if r == nil || r.Budget != "acme" || !r.Tokens || r.Limit != 1000 || r.Remaining != 0 || r.Reset != 40*time.Second || r.RetryAfter() != "40" {
		t.Fatalf("refusal %+v", r)
	}
	// The first used 150 of its 300: 150 come back.
	l.Settle(&t1, Settled{Responded: true, UsageKnown: true, PromptTokens: 100, OutputTokens: 50})
	if r := l.Admit(tenantReq("acme", 50, 100), &t3); r != nil {
		t.Fatalf("refused after the settlement: %+v", r)
	}
	// A request that failed before its response releases what it reserved.
	l.Settle(&t2, Settled{})
	st := l.States()[0]
	if st.UsedTokens != 150+150 || st.UsedRequests != 2 || st.AdmittedTotal != 3 || st.RefusedTotal != 1 {
		t.Fatalf("state %+v", st)
	}
	// Settling twice changes nothing.
	l.Settle(&t2, Settled{Responded: true, UsageKnown: true, PromptTokens: 999})
	if st := l.States()[0]; st.UsedTokens != 300 {
		t.Fatalf("settled twice: %d", st.UsedTokens)
	}
	// The next window starts at the share: 500 of 1000.
	clk.add(40 * time.Second)
	st = l.States()[0]
	if st.UsedTokens != 0 || st.CeilingTokens != 500 || st.Granted {
		t.Fatalf("next window %+v", st)
	}
	// A request that matches no budget is admitted; one of another tenant charges its own.
	var t4 Ticket
	if r := l.Admit(tenantReq("third", 1, 1), &t4); r != nil {
		t.Fatalf("refused %+v", r)
	}
}

// TestLedgerRequestLimitAndCounts: a requests-only budget counts requests; input and output
// budgets count their side only.
func TestLedgerRequestLimitAndCounts(t *testing.T) {
	clk := newClock(1_000_000)
	l := NewLedger(LedgerOptions{Now: clk.now, DefaultOutputTokens: 64})
	reqs := Spec{Name: "reqs", Requests: 2}
	reqs.Complete()
	in := Spec{Name: "in", Tokens: 1000, Count: CountInput}
	in.Complete()
	out := Spec{Name: "out", Tokens: 1000, Count: CountOutput}
	out.Complete()
	l.SetBudgets(setOf(reqs, in, out))
	w := WindowStart(clk.now(), time.Minute)
	l.Grant([]Grant{{Name: "reqs", Window: w, CeilingRequests: 2}, {Name: "in", Window: w, CeilingTokens: 1000}, {Name: "out", Window: w, CeilingTokens: 1000}})
	var a, b, c Ticket
	if l.Admit(tenantReq("x", 10, 0), &a) != nil || l.Admit(tenantReq("x", 10, 5), &b) != nil {
		t.Fatal("refused under the limits")
	}
	r := l.Admit(tenantReq("x", 10, 5), &c)
	if r == nil || r.Budget != "reqs" || r.Tokens || r.Limit != 2 {
		t.Fatalf("refusal %+v", r)
	}
	got := map[string]int64{}
	for _, s := range l.States() {
		got[s.Name] = s.UsedTokens
	}
	// in: 10+10; out: the default 64 and 5.
	if got["in"] != 20 || got["out"] != 69 {
		t.Fatalf("used %v", got)
	}
}

// sim is a fleet of ledgers and an allocator, reporting in turn with a delay between a
// report and its grant.
type sim struct {
	clk     *fakeClock
	alloc   *Allocator
	ledgers []*Ledger
}

func newSim(n int, set Set, start int64) *sim {
	s := &sim{clk: newClock(start)}
	s.alloc = NewAllocator(AllocatorOptions{Now: s.clk.now, Settle: -1})
	s.alloc.SetBudgets(set)
	for i := 0; i < n; i++ {
		l := NewLedger(LedgerOptions{Now: s.clk.now})
		l.SetBudgets(set)
		l.Grant(s.alloc.Report(key(i), key(i), nil))
		s.ledgers = append(s.ledgers, l)
	}
	return s
}

func key(i int) string { return string(rune('a' + i)) }

// TestAllocationNeverExceedsTheBudget drives three clusters at three times the budget, with
// demand moving between them, reports in random order and grants that arrive late, and checks
// every window's admitted tokens against the budget; it also checks that the fleet uses most of
// the budget, so the ceilings do not simply stay low.
func TestAllocationNeverExceedsTheBudget(t *testing.T) {
	const budget = 60000
	set := setOf(spec("acme", budget))
	s := newSim(3, set, 1_700_000_000)
	rng := rand.New(rand.NewPCG(1, 2))
	admitted := map[int64]int64{}
	type pending struct {
		at     time.Time
		ledger int
		grants []Grant
	}
	var inflight []pending
	const step = 10 * time.Millisecond
	nextReport := make([]time.Time, 3)
	for i := range nextReport {
		nextReport[i] = s.clk.now().Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
	}
	end := s.clk.now().Add(10 * time.Minute)
	for s.clk.now().Before(end) {
		now := s.clk.now()
		minute := now.Unix() / 60
		// Demand: 3× the budget in all, moving between the clusters each 40 s.
		phase := (now.Unix() / 40) % 3
		for i, l := range s.ledgers {
			rate := 1.0 / 3
			if minute%2 == 1 { // odd minutes: one cluster at a time takes it all
				rate = 0
				if int64(i) == phase {
					rate = 1
				}
			}
			// tokens offered this step: 3×budget/min × rate
			offered := int64(3 * budget * rate * step.Seconds() / 60)
			for offered > 0 {
				in, out := int64(300), int64(200)
				var tk Ticket
				if l.Admit(tenantReq("acme", in, out), &tk) == nil {
					// Most requests use less output than they reserved.
					used := int64(rng.IntN(int(out) + 1))
					l.Settle(&tk, Settled{Responded: true, UsageKnown: true, PromptTokens: in, OutputTokens: used})
					admitted[WindowStart(now, time.Minute)] += in + used
				}
				offered -= in + out
			}
			if !now.Before(nextReport[i]) {
				g := s.alloc.Report(key(i), key(i), l.Report())
				inflight = append(inflight, pending{at: now.Add(time.Duration(20+rng.IntN(200)) * time.Millisecond), ledger: i, grants: g})
				nextReport[i] = now.Add(time.Second)
			}
		}
		keep := inflight[:0]
		for _, p := range inflight {
			if !now.Before(p.at) {
				s.ledgers[p.ledger].Grant(p.grants)
			} else {
				keep = append(keep, p)
			}
		}
		inflight = keep
		s.clk.add(step)
	}
	for w, n := range admitted {
		if n > budget {
			t.Errorf("window %d admitted %d tokens, more than the budget %d", w, n, budget)
		}
		if n < budget*8/10 && w != WindowStart(end, time.Minute) {
			t.Errorf("window %d admitted only %d of %d tokens", w, n, budget)
		}
	}
}

// TestLedgerPaces: a paced budget (burst 0.1) lets a cluster charge, at a fraction f of the
// window, (f + 0.1) of its ceiling; the refusal's reset is when the pace allows the request.
func TestLedgerPaces(t *testing.T) {
	clk := newClock(1_800_000_000) // a window's start
	l := NewLedger(LedgerOptions{Now: clk.now})
	s := Spec{Name: "paced", Tokens: 1000, Burst: 0.1}
	s.Complete()
	l.SetBudgets(setOf(s))
	l.Grant([]Grant{{Name: "paced", Window: WindowStart(clk.now(), time.Minute), CeilingTokens: 1000, Share: 1}})
	var tk Ticket
	if r := l.Admit(Request{PromptTokens: 40, MaxTokens: 60}, &tk); r != nil {
		t.Fatalf("the burst refused: %+v", r)
	}
	r := l.Admit(Request{PromptTokens: 40, MaxTokens: 60}, &tk)
	// 200 of 1000 are allowed at 0.2 − 0.1 of the minute: 6 s from now.
	if r == nil || r.Remaining != 0 || r.Reset != 6*time.Second {
		t.Fatalf("refusal %+v, want none remaining and a reset in 6s", r)
	}
	clk.add(30 * time.Second) // 0.6 of the ceiling allowed
	for i := range 5 {
		if r := l.Admit(Request{PromptTokens: 40, MaxTokens: 60}, &tk); r != nil {
			t.Fatalf("request %d refused at half the window: %+v", i+2, r)
		}
	}
	if r := l.Admit(Request{PromptTokens: 40, MaxTokens: 60}, &tk); r == nil {
		t.Fatal("a seventh request admitted at half the window: the pace allows 600")
	}
}
