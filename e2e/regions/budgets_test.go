package regions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// budgetWindow is the window of the test's budget: 20 s in `make test`, a minute in `make
// bench-budgets` (SPILLWAY_BUDGET_WINDOW), which writes docs/benchmarks/budgets.json.
func budgetWindow(t *testing.T) time.Duration {
	w := 20 * time.Second
	if v := os.Getenv("SPILLWAY_BUDGET_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SPILLWAY_BUDGET_WINDOW: %v", err)
		}
		w = d
	}
	return w
}

// The tenants: acme sends more than its budget, good less than its own.
const budgetTenant, goodTenant = "acme", "good"

// budgetFile writes the hub's budgets file: tenant acme's budget of tokens per window, paced
// (burst 0.2: at a fraction f of the window at most f + 0.2 of it, so that acme, far over it,
// spends it evenly), and tenant good's, ten times as large (the well-behaved tenant of the
// fairness phase stays under it).
func budgetFile(path string, tokens int64, window time.Duration) error {
	var doc string
	for _, b := range []struct {
		tenant string
		tokens int64
		burst  float64
	}{{budgetTenant, tokens, 0.2}, {goodTenant, 10 * tokens, 0}} {
		doc += fmt.Sprintf("---\napiVersion: spillway.io/v1alpha1\nkind: TokenBudget\nmetadata: {name: %s}\nspec:\n  selector: {tenant: %s}\n  tokensPerWindow: %d\n  window: %s\n  burst: %v\n",
			b.tenant, b.tenant, b.tokens, window, b.burst)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// spokeMetric reads one budget metric of a region's spoke.
func (r *Run) spokeMetric(ctx context.Context, reg Region, name string) (float64, error) {
	body, err := r.SpokeGet(ctx, reg, "/metrics")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^` + name + `\{budget="acme"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("%s: no %s for budget acme", reg.Name, name)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// windowTokens adds up the tokens of the admitted requests (their usage) by the window their
// request started in.
func windowTokens(rs []loadgen.Result, w time.Duration) map[int64]int64 {
	out := map[int64]int64{}
	for _, res := range rs {
		if res.OK() {
			out[res.Start.UnixMilli()/w.Milliseconds()] += int64(res.PromptTokens + res.CompletionTokens)
		}
	}
	return out
}

// admittedAfterCap returns, for each window in which the admitted tokens (by request start)
// reach capAt, how many requests started more than after later were admitted.
func admittedAfterCap(rs []loadgen.Result, window time.Duration, capAt int64, after time.Duration) map[int64]int {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b loadgen.Result) int { return a.Start.Compare(b.Start) })
	used := map[int64]int64{}
	capped := map[int64]time.Time{}
	out := map[int64]int{}
	for _, res := range sorted {
		k := res.Start.UnixMilli() / window.Milliseconds()
		if c, ok := capped[k]; ok && res.Start.After(c.Add(after)) && res.OK() {
			out[k]++
		}
		if res.OK() {
			used[k] += int64(res.PromptTokens + res.CompletionTokens)
			if _, ok := capped[k]; !ok && used[k] >= capAt {
				capped[k] = res.Start
				out[k] += 0
			}
		}
	}
	return out
}

// benchMedians reads BenchmarkBudgetsPathCost's output: the median over its runs of each
// reported figure, named as budgets.json names them (p99_ratio_with_budgets, ...).
func benchMedians(out string) map[string]float64 {
	names := map[string]string{"p99-ratio": "p99_ratio_with_budgets", "p50-ns-none": "p50_ns_without_budgets",
		"p99-ns-none": "p99_ns_without_budgets", "p50-ns-budgets": "p50_ns_with_1000_budgets", "p99-ns-budgets": "p99_ns_with_1000_budgets"}
	vals := map[string][]float64{}
	for _, m := range regexp.MustCompile(`([0-9.]+) (p[0-9]+-[a-z-]+)`).FindAllStringSubmatch(out, -1) {
		if name, ok := names[m[2]]; ok {
			v, err := strconv.ParseFloat(m[1], 64)
			if err == nil {
				vals[name] = append(vals[name], v)
			}
		}
	}
	res := map[string]float64{}
	for k, vs := range vals {
		slices.Sort(vs)
		res[k] = vs[len(vs)/2]
	}
	return res
}

// budgetPhase is one measured part of the test.
type budgetPhase struct {
	Name string `json:"name"`
	// Windows are the admitted tokens of each whole window of the phase.
	Windows []int64 `json:"admitted_tokens_per_window"`
	// Overshoot is the worst window's admitted ÷ budget − 1; Overdraw the tokens requests used
	// beyond their reservations during the phase, at every spoke (the documented bound's term).
	Overshoot float64 `json:"overshoot_ratio"`
	Overdraw  float64 `json:"overdraw_tokens"`
	Refused   int     `json:"refused"`
	Admitted  int     `json:"admitted"`
}

// TestTokenBudget: tenant acme has a budget of B tokens per window across the three regions.
//
//   - Steady: each region sends acme's requests at a rate that offers 3×B per window in all;
//     every whole window admits at most B plus the overdraw (docs/budgets.md, "The bound"), at
//     most 5 % over B, and at least 80 % of it (the fleet uses its budget).
//   - Moving: the load moves from us-east to eu-west in the middle of each window; the same
//     bound holds, and once us-east has used the window's budget, eu-west is capped within a
//     report interval: of its requests sent a report interval after us-east's first refusal, at
//     most a tenth are admitted.
//   - Hub killed: the hub is killed in the middle of a window and restarted in the middle of
//     the next; the spokes keep enforcing their ceilings and then their shares; the bound holds.
//
// Requests are charged where they are admitted, once: a spilled request is not charged at its
// target (the regions' pools do not saturate at this load; spill_test covers spilled charges).
func TestTokenBudget(t *testing.T) {
	ctx := context.Background()
	prefix := os.Getenv("SPILLWAY_NETNS_PREFIX")
	if prefix == "" {
		t.Skip("run by make e2e (root; it builds the network namespaces)")
	}
	window := budgetWindow(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "budgets.yaml")
	// First a budget that limits nothing the calibration sends, to learn a request's tokens.
	if err := budgetFile(file, 1_000_000_000, window); err != nil {
		t.Fatal(err)
	}
	r, err := Start(ctx, Config{Prefix: prefix, BinDir: os.Getenv("SPILLWAY_BIN_DIR"), WorkDir: dir,
		HubArgs: []string{"--budgets-file", file, "--budget-report-interval", "1s"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	acme := map[string]string{"x-spillway-tenant": budgetTenant}
	// Standard requests only: a 429 is then the budget's, never the shedding of BestEffort.
	std := []string{"Standard=standard:1"}
	us, eu := r.Regions[0], r.Regions[2]

	// A spoke admits a budget's requests from its first grant on (a hub that just started
	// grants after its settle period).
	testkit.Eventually(t, 40*time.Second, "us-east granted a ceiling", func() error {
		v, err := r.spokeMetric(ctx, us, "spillway_epp_budget_window_ceiling_tokens")
		if err == nil && v <= 0 {
			err = fmt.Errorf("ceiling %v", v)
		}
		return err
	})
	cal, err := r.Load(ctx, us, Load{Rate: 4, Duration: 5 * time.Second, Headers: acme, Classes: std})
	if err != nil {
		t.Fatal(err)
	}
	var tokens, n float64
	for _, res := range cal {
		if res.OK() {
			tokens += float64(res.PromptTokens + res.CompletionTokens)
			n++
		}
	}
	if n < float64(len(cal))*9/10 || n < 5 {
		t.Fatalf("calibration: %v of %d requests reported usage", n, len(cal))
	}
	perRequest := tokens / n
	// 9 requests a second across the fleet offer 3×B.
	const fleetRate = 9.0
	budget := int64(fleetRate * window.Seconds() * perRequest / 3)
	if err := budgetFile(file, budget, window); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "every spoke enforces the budget", func() error {
		for _, reg := range r.Regions {
			v, err := r.spokeMetric(ctx, reg, "spillway_epp_budget_limit_tokens")
			if err != nil {
				return err
			}
			if int64(v) != budget {
				return fmt.Errorf("%s enforces %v, not %d", reg.Name, v, budget)
			}
		}
		return nil
	})
	t.Logf("budget %d tokens per %s (%.1f tokens per request)", budget, window, perRequest)

	overdraw := func() float64 {
		var sum float64
		for _, reg := range r.Regions {
			v, err := r.spokeMetric(ctx, reg, "spillway_epp_budget_overdraw_tokens_total")
			if err != nil {
				t.Fatal(err)
			}
			sum += v
		}
		return sum
	}
	// untilWindow waits for the start of the next window (and 200 ms into it).
	untilWindow := func() time.Time {
		now := time.Now()
		next := now.Truncate(window).Add(window)
		time.Sleep(time.Until(next) + 200*time.Millisecond)
		return next
	}
	measure := func(name string, rs []loadgen.Result, from time.Time, windows int, drawn float64) budgetPhase {
		p := budgetPhase{Name: name, Overdraw: drawn}
		by := windowTokens(rs, window)
		first := from.UnixMilli() / window.Milliseconds()
		for k := first; k < first+int64(windows); k++ {
			p.Windows = append(p.Windows, by[k])
			p.Overshoot = math.Max(p.Overshoot, float64(by[k])/float64(budget)-1)
		}
		for _, res := range rs {
			switch {
			case res.OK():
				p.Admitted++
			case res.Status == 429:
				p.Refused++
			}
		}
		t.Logf("%s: admitted tokens per window %v of %d; overshoot %.4f; overdraw %v tokens; %d admitted, %d refused",
			name, p.Windows, budget, p.Overshoot, drawn, p.Admitted, p.Refused)
		return p
	}
	// check asserts the bound on every window of a phase: admitted ≤ B + overdraw, ≤ 1.05 B.
	check := func(p budgetPhase, floor bool) {
		t.Helper()
		for i, got := range p.Windows {
			if float64(got) > float64(budget)+p.Overdraw || float64(got) > 1.05*float64(budget) {
				t.Errorf("%s: window %d admitted %d tokens, more than the budget %d plus the overdraw %v (or 5 %%)", p.Name, i, got, budget, p.Overdraw)
			}
			if floor && float64(got) < 0.8*float64(budget) {
				t.Errorf("%s: window %d admitted only %d tokens of the budget %d", p.Name, i, got, budget)
			}
		}
	}
	loadAll := func(d time.Duration) []loadgen.Result {
		var mu sync.Mutex
		var all []loadgen.Result
		var wg sync.WaitGroup
		for _, reg := range r.Regions {
			wg.Go(func() {
				rs, err := r.Load(ctx, reg, Load{Rate: fleetRate / 3, Duration: d, Headers: acme, Classes: std})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				all = append(all, rs...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return all
	}

	// Steady: 3×B across the three regions for two whole windows.
	before := overdraw()
	start := untilWindow()
	steady := measure("steady", loadAll(2*window), start, 2, overdraw()-before)
	check(steady, true)

	// Moving: us-east for the first half of each window, eu-west for the second.
	before = overdraw()
	start = untilWindow()
	var moving []loadgen.Result
	for range 2 {
		east, err := r.Load(ctx, us, Load{Rate: 2 * fleetRate / 3, Duration: window / 2, Headers: acme, Classes: std})
		if err != nil {
			t.Fatal(err)
		}
		west, err := r.Load(ctx, eu, Load{Rate: 2 * fleetRate / 3, Duration: window/2 - 300*time.Millisecond, Headers: acme, Classes: std})
		if err != nil {
			t.Fatal(err)
		}
		moving = append(append(moving, east...), west...)
	}
	mv := measure("moving", moving, start, 2, overdraw()-before)
	check(mv, false)
	// Once the fleet has used the window's budget (to within two requests), a report interval
	// later no region admits more than the last two requests' worth.
	for k, late := range admittedAfterCap(moving, window, budget-int64(2*perRequest), time.Second) {
		t.Logf("moving: window %d: %d requests admitted a report interval after the budget was used", k, late)
		if late > 2 {
			t.Errorf("moving: window %d admitted %d requests a report interval after the fleet used its budget", k, late)
		}
	}

	// Hub killed in the middle of a window, started again in the middle of the next.
	before = overdraw()
	start = untilWindow()
	var killed []loadgen.Result
	done := make(chan struct{})
	go func() {
		defer close(done)
		killed = loadAll(3 * window)
	}()
	time.Sleep(window / 2)
	r.Fleet.Hub.Kill()
	t.Logf("hub killed %s into the window", time.Since(start).Round(time.Millisecond))
	time.Sleep(window)
	if err := r.Fleet.StartHub(); err != nil {
		t.Fatal(err)
	}
	<-done
	hk := measure("hub killed", killed, start, 3, overdraw()-before)
	check(hk, false)

	// Fairness: tenant good sends 2 requests a second to us-east alone, then beside acme sending
	// three times its budget there: acme is held to its budget (which us-east borrows whole) at
	// its pace, good's success rate stays whole and its TTFT near what it was alone. acme's budget
	// is a third of the fleet's here (1 request a second), sized, as an operator sizes a tenant's
	// budget, below what the region serves beside its other tenants: the budget cannot give good
	// capacity that the servers do not have.
	fairBudget := budget / 3
	if err := budgetFile(file, fairBudget, window); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "every spoke enforces acme's smaller budget", func() error {
		for _, reg := range r.Regions {
			if v, err := r.spokeMetric(ctx, reg, "spillway_epp_budget_limit_tokens"); err != nil || int64(v) != fairBudget {
				return fmt.Errorf("%s enforces %v (%v), not %d", reg.Name, v, err, fairBudget)
			}
		}
		return nil
	})
	good := map[string]string{"x-spillway-tenant": goodTenant}
	untilWindow()
	alone, err := r.Load(ctx, us, Load{Rate: 2, Duration: window / 2, Headers: good, Classes: std, StreamShare: 1})
	if err != nil {
		t.Fatal(err)
	}
	untilWindow()
	var crowded, acmeRs []loadgen.Result
	var acmeErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		acmeRs, acmeErr = r.Load(ctx, us, Load{Rate: fleetRate / 3, Duration: window, Headers: acme, Classes: std})
	})
	crowded, err = r.Load(ctx, us, Load{Rate: 2, Duration: window, Headers: good, Classes: std, StreamShare: 1})
	wg.Wait()
	if err := errors.Join(err, acmeErr); err != nil {
		t.Fatal(err)
	}
	if s := summary(acmeRs, "Standard"); s.Statuses["429"] < s.Requests/3 {
		t.Errorf("fairness: acme, at three times its budget, was refused %d of %d requests", s.Statuses["429"], s.Requests)
	}
	fair := map[string]float64{}
	for name, rs := range map[string][]loadgen.Result{"alone": alone, "beside_acme": crowded} {
		s := summary(rs, "Standard")
		fair["good_success_"+name] = float64(s.Succeeded) / float64(max(s.Requests, 1))
		fair["good_ttft_p50_ms_"+name] = s.TTFTp50
		t.Logf("fairness: good %s: %d requests, success %.3f, TTFT p50 %.0f ms", name, s.Requests, fair["good_success_"+name], s.TTFTp50)
	}
	if fair["good_success_beside_acme"] < fair["good_success_alone"] || fair["good_success_beside_acme"] < 0.99 {
		t.Errorf("fairness: good's success rate %.3f beside acme, %.3f alone", fair["good_success_beside_acme"], fair["good_success_alone"])
	}
	if fair["good_ttft_p50_ms_beside_acme"] > 1.5*fair["good_ttft_p50_ms_alone"]+50 {
		t.Errorf("fairness: good's TTFT p50 %.0f ms beside acme, %.0f ms alone", fair["good_ttft_p50_ms_beside_acme"], fair["good_ttft_p50_ms_alone"])
	}

	if out := os.Getenv("SPILLWAY_BUDGETS_JSON"); out != "" {
		perMin := 60 / window.Seconds()
		maxWindow := int64(0)
		for _, w := range steady.Windows {
			maxWindow = max(maxWindow, w)
		}
		bound := (steady.Overdraw) / float64(budget)
		rep := map[string]any{
			"budget_tokens_per_min":              float64(budget) * perMin,
			"offered_tokens_per_min":             fleetRate * 60 * perRequest,
			"admitted_tokens_per_min_max_window": float64(maxWindow) * perMin,
			"overshoot_ratio":                    steady.Overshoot,
			"documented_bound":                   bound,
			"moving_overshoot_ratio":             mv.Overshoot,
			"hub_killed_overshoot_ratio":         hk.Overshoot,
			"date":                               time.Now().UTC().Format(time.DateOnly),
			"command":                            "make bench-budgets",
			"window":                             window.String(),
			"phases":                             []budgetPhase{steady, mv, hk},
			"fairness":                           fair,
		}
		if f := os.Getenv("SPILLWAY_EPP_BENCH"); f != "" {
			bench, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range benchMedians(string(bench)) {
				rep["epp_"+k] = v
			}
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
