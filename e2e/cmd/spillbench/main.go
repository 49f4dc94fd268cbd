// Command spillbench is `make bench-spill`: the burst scenario of the three-region run, three
// ways in one run — Spillway's federated routing, local-only (each cluster's EPP alone, the
// in-cluster GIE behaviour) and naive round-robin across the regions' gateways — plus a killed
// region under Spillway. It writes docs/benchmarks/spill.json, the plot docs/benchmarks/spill.png
// and the figures into docs/benchmarks.md. It runs inside the namespaces hack/regions.sh builds.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/regions"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

type options struct {
	prefix, binDir, workDir, jsonPath, plotPath, doc string
	steady, burst                                    float64
	before, during, after                            time.Duration
	ragRate                                          float64
	ragWarm, ragBurst                                time.Duration
	only                                             string
	flowControl                                      bool
	criticalTTFT                                     time.Duration
}

func newCommand() *cobra.Command {
	o := options{}
	cmd := &cobra.Command{
		Use:          "spillbench",
		Short:        "Federated routing against local-only and round-robin routing, three regions",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE:         func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.prefix, "netns-prefix", os.Getenv("SPILLWAY_NETNS_PREFIX"), "prefix of the network namespaces hack/regions.sh built")
	f.StringVar(&o.binDir, "bin-dir", "bin", "directory of Spillway's binaries and toxiproxy-server")
	f.StringVar(&o.workDir, "work-dir", "", "directory for logs (default: a temporary one)")
	f.StringVar(&o.jsonPath, "json", "docs/benchmarks/spill.json", "where the figures go, as JSON")
	f.StringVar(&o.plotPath, "plot", "docs/benchmarks/spill.png", "where the time-series plot goes")
	f.StringVar(&o.doc, "update-doc", "docs/benchmarks.md", "markdown file whose spill section is replaced")
	f.Float64Var(&o.steady, "steady-rate", 2, "requests per second of every region outside the burst")
	f.Float64Var(&o.burst, "burst-rate", 24, "us-east's requests per second during the burst (about 3× its capacity)")
	f.DurationVar(&o.before, "before", 10*time.Second, "steady load before the burst")
	f.DurationVar(&o.during, "burst", 25*time.Second, "length of the burst")
	f.DurationVar(&o.after, "after", 10*time.Second, "steady load after the burst")
	f.Float64Var(&o.ragRate, "rag-burst-rate", 12, "us-east's requests per second during the RAG workload's burst")
	f.DurationVar(&o.ragWarm, "rag-warm", 20*time.Second, "steady RAG load before its burst (the regions' caches fill with their contexts)")
	f.DurationVar(&o.ragBurst, "rag-burst", 80*time.Second, "length of the RAG workload's burst")
	f.StringVar(&o.only, "only", "", "run only this part: burst or rag (the JSON and the page keep the other's figures)")
	f.BoolVar(&o.flowControl, "flow-control", false, "run Spillway's EPP with flow control (queueDepth 1)")
	f.DurationVar(&o.criticalTTFT, "critical-ttft", 500*time.Millisecond, "the critical objective's latency objective (ttft) in Spillway's EPP (0: none)")
	return cmd
}

// Strategy results, as docs/benchmarks/spill.json carries them.
type strategyResult struct {
	CriticalSuccess      float64 `json:"critical_success"`
	CriticalTTFTp50      float64 `json:"critical_ttft_p50_ms"`
	CriticalTTFTp99      float64 `json:"critical_ttft_p99_ms"`
	StandardSpilledShare float64 `json:"standard_spilled_share"`
	BestEffortShedShare  float64 `json:"besteffort_shed_share"`
	CrossRegionShare     float64 `json:"cross_region_share"`
	Requests             int     `json:"requests"`
}

type report struct {
	Date                      string                    `json:"date"`
	Command                   string                    `json:"command"`
	Scenario                  string                    `json:"scenario"`
	Strategies                map[string]strategyResult `json:"-"`
	Spillway                  strategyResult            `json:"spillway"`
	LocalOnly                 strategyResult            `json:"local_only"`
	RoundRobin                strategyResult            `json:"round_robin"`
	CriticalP99RatioLocalOnly float64                   `json:"critical_p99_ratio_vs_local_only"`
	// CriticalP99RatioRoundRobin is Spillway's Critical TTFT p99 ÷ round-robin's.
	CriticalP99RatioRoundRobin float64 `json:"critical_p99_ratio_vs_round_robin"`
	// CriticalTTFTObjectiveMs is the critical objective's ttft in Spillway's run, 0 for none.
	CriticalTTFTObjectiveMs   float64 `json:"critical_ttft_objective_ms"`
	DeadClusterDetectS        float64 `json:"dead_cluster_detect_s"`
	RequestsToDeadAfterDetect int     `json:"requests_to_dead_after_detect"`
	// The cache-aware comparison (rag.go).
	SpilledPrefixHitRateCacheAware float64   `json:"spilled_prefix_hit_rate_cache_aware"`
	SpilledPrefixHitRateBlind      float64   `json:"spilled_prefix_hit_rate_blind"`
	SpilledTTFTp50RatioAwareBlind  float64   `json:"spilled_ttft_p50_ratio_cache_aware_vs_blind"`
	RAG                            ragReport `json:"rag"`
}

func run(ctx context.Context, o options) error {
	if o.prefix == "" {
		return errors.New("--netns-prefix is required: run it through make bench-spill")
	}
	if o.only != "" && o.only != "burst" && o.only != "rag" {
		return fmt.Errorf("--only %q: want burst or rag", o.only)
	}
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "spillway-spillbench-")
		if err != nil {
			return err
		}
		o.workDir = d
	}
	// A partial run keeps the other part's figures from the last report.
	var rep report
	if o.only != "" {
		b, err := os.ReadFile(o.jsonPath)
		if err != nil {
			return fmt.Errorf("--only %s keeps the other figures of %s: %w", o.only, o.jsonPath, err)
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("%s: %w", o.jsonPath, err)
		}
	}
	// date is the report's (the burst's) unless the burst kept its figures; the RAG part has
	// its own.
	now := time.Now().UTC().Format(time.RFC3339)
	if o.only != "rag" {
		rep.Date = now
	}
	rep.Command = "make bench-spill"
	rep.Strategies = map[string]strategyResult{"spillway": rep.Spillway, "local_only": rep.LocalOnly, "round_robin": rep.RoundRobin}
	if o.only != "rag" {
		if err := o.burstRuns(ctx, &rep); err != nil {
			return err
		}
	}
	if o.only != "burst" {
		rag, err := o.ragCompare(ctx)
		if err != nil {
			return err
		}
		rep.RAG = rag
		rep.RAG.Date = now
		rep.SpilledPrefixHitRateCacheAware, rep.SpilledPrefixHitRateBlind, rep.SpilledTTFTp50RatioAwareBlind = rag.HitAware, rag.HitBlind, rag.TTFTRatio
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return updateDoc(o.doc, rep)
}

// burstRuns runs the burst scenario under the three strategies and with a killed region.
func (o options) burstRuns(ctx context.Context, rep *report) error {
	rep.Scenario = fmt.Sprintf("us-east bursts from %.0f to %.0f requests/s for %s (about 3× its capacity) while every region serves %.0f requests/s",
		o.steady, o.burst, o.during, o.steady)
	if o.criticalTTFT > 0 {
		rep.Scenario += fmt.Sprintf("; Spillway's critical objective states a latency objective (`ttft: %s`, docs/epp.md)", o.criticalTTFT)
	}
	if o.flowControl {
		rep.Scenario += "; Spillway's EPPs run flow control (queue depth 1)"
	}
	rep.CriticalTTFTObjectiveMs = float64(o.criticalTTFT.Milliseconds())
	var spillway *outcome
	for _, s := range []string{"spillway", "local_only", "round_robin"} {
		fmt.Printf("== %s\n", s)
		out, err := o.scenario(ctx, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		res := out.result()
		rep.Strategies[s] = res
		fmt.Printf("   critical success %.4f, TTFT p50 %.0f ms p99 %.0f ms; standard spilled %.3f; besteffort shed %.3f; cross-region %.3f (%d requests)\n",
			res.CriticalSuccess, res.CriticalTTFTp50, res.CriticalTTFTp99, res.StandardSpilledShare, res.BestEffortShedShare, res.CrossRegionShare, res.Requests)
		fmt.Printf("   critical TTFT by where it was served (during the burst): %s\n", out.criticalByRegion(o.before, o.before+o.during))
		if s == "spillway" {
			spillway = out
		}
	}
	if rr := rep.Strategies["round_robin"].CriticalTTFTp99; rr > 0 {
		rep.CriticalP99RatioRoundRobin = rep.Strategies["spillway"].CriticalTTFTp99 / rr
	}
	if lo := rep.Strategies["local_only"].CriticalTTFTp99; lo > 0 {
		rep.CriticalP99RatioLocalOnly = rep.Strategies["spillway"].CriticalTTFTp99 / lo
	}
	fmt.Println("== spillway, a region killed during the burst")
	detect, after, err := o.killed(ctx)
	if err != nil {
		return fmt.Errorf("killed region: %w", err)
	}
	rep.DeadClusterDetectS, rep.RequestsToDeadAfterDetect = detect.Seconds(), after
	fmt.Printf("   us-west left us-east's targets %.2f s after it was killed; %d requests went there afterwards\n", detect.Seconds(), after)
	rep.Spillway, rep.LocalOnly, rep.RoundRobin = rep.Strategies["spillway"], rep.Strategies["local_only"], rep.Strategies["round_robin"]
	return drawPlot(spillway, o.plotPath)
}

// outcome is every request of one strategy's run, by region.
type outcome struct {
	run     *regions.Run
	results map[string][]loadgen.Result
	start   time.Time
}

// scenario runs the burst under one strategy.
func (o options) scenario(ctx context.Context, strategy string) (*outcome, error) {
	var spokeArgs []string
	// --flow-control runs Spillway's EPP with flow control (docs/epp.md, "Flow control").
	eppConfig := ""
	if o.flowControl {
		eppConfig = "flowControl: {enabled: true, queueDepth: 1}\n"
	}
	if strategy != "spillway" {
		spokeArgs, eppConfig = []string{"--spill=false"}, ""
	}
	var ttft time.Duration
	if strategy == "spillway" {
		ttft = o.criticalTTFT
	}
	r, err := regions.Start(ctx, regions.Config{Prefix: o.prefix, BinDir: o.binDir, WorkDir: mkdir(o.workDir, strategy), SpokeArgs: spokeArgs,
		EPPConfig: eppConfig, CriticalTTFT: ttft})
	if err != nil {
		return nil, err
	}
	defer r.Stop()
	out := &outcome{run: r, results: map[string][]loadgen.Result{}, start: time.Now()}
	east := r.Regions[0]
	var eastTargets []string
	if strategy == "round_robin" {
		eastTargets = []string{east.Gateway, regions.ProxyAddress(2), regions.ProxyAddress(3)}
	}
	total := o.before + o.during + o.after
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, reg := range r.Regions[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs, err := r.Load(ctx, reg, regions.Load{Rate: o.steady, Duration: total})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			out.results[reg.Name] = rs
			mu.Unlock()
		}()
	}
	var eastRS []loadgen.Result
	for _, phase := range []regions.Load{{Rate: o.steady, Duration: o.before}, {Rate: o.burst, Duration: o.during}, {Rate: o.steady, Duration: o.after}} {
		phase.Targets = eastTargets
		rs, err := r.Load(ctx, east, phase)
		if err != nil {
			errs <- err
			break
		}
		eastRS = append(eastRS, rs...)
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return nil, err
	}
	out.results[east.Name] = eastRS
	return out, nil
}

// killed runs the burst under Spillway and kills us-west, the nearest target, five seconds in.
func (o options) killed(ctx context.Context) (time.Duration, int, error) {
	r, err := regions.Start(ctx, regions.Config{Prefix: o.prefix, BinDir: o.binDir, WorkDir: mkdir(o.workDir, "killed")})
	if err != nil {
		return 0, 0, err
	}
	defer r.Stop()
	return r.KillDuringLoad(ctx, r.Regions[0], r.Regions[1], regions.Load{Rate: o.burst, Duration: 20 * time.Second}, 5*time.Second)
}

// criticalByRegion sums up the Critical requests of us-east sent between from and to (since the
// run's start) by the region that served them: count, TTFT p50 and p99.
func (out *outcome) criticalByRegion(from, to time.Duration) string {
	east := out.run.Regions[0]
	by := map[string][]time.Duration{}
	for _, r := range out.results[east.Name] {
		if r.Class != "Critical" || !r.OK() || r.Start.Sub(out.start) < from || r.Start.Sub(out.start) > to {
			continue
		}
		where := out.run.RemoteRegion(east, r)
		if where == "" {
			where = east.Name
		}
		by[where] = append(by[where], r.TTFT)
	}
	var parts []string
	for _, reg := range out.run.Regions {
		if ts := by[reg.Name]; len(ts) > 0 {
			parts = append(parts, fmt.Sprintf("%s %d, p50 %.0f ms p99 %.0f ms", reg.Name, len(ts), loadgen.Percentile(ts, 0.5), loadgen.Percentile(ts, 0.99)))
		}
	}
	return strings.Join(parts, "; ")
}

func (out *outcome) result() strategyResult {
	east := out.run.Regions[0]
	rs := out.results[east.Name]
	var res strategyResult
	var ttft []time.Duration
	var crit, critOK, std, stdOut, be, beShed, remote int
	for _, r := range rs {
		res.Requests++
		away := out.run.RemoteRegion(east, r) != ""
		if away {
			remote++
		}
		switch r.Class {
		case "Critical":
			crit++
			if r.OK() {
				critOK++
				ttft = append(ttft, r.TTFT)
			}
		case "Standard":
			std++
			if away {
				stdOut++
			}
		case "BestEffort":
			be++
			if r.Status == 429 {
				beShed++
			}
		}
	}
	res.CriticalSuccess = ratio(critOK, crit)
	res.CriticalTTFTp50, res.CriticalTTFTp99 = loadgen.Percentile(ttft, 0.5), loadgen.Percentile(ttft, 0.99)
	res.StandardSpilledShare, res.BestEffortShedShare, res.CrossRegionShare = ratio(stdOut, std), ratio(beShed, be), ratio(remote, res.Requests)
	return res
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

func mkdir(parent, name string) string {
	d := parent + "/" + name
	_ = os.MkdirAll(d, 0o755)
	return d
}

// updateDoc replaces the spill section of the benchmarks page.
func updateDoc(path string, rep report) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const begin, end = "<!-- spill-benchmark:begin (written by make bench-spill) -->", "<!-- spill-benchmark:end -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section", path, begin, end)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%s\nRun %s with `%s`. %s.\n\n", begin, rep.Date, rep.Command, rep.Scenario)
	s.WriteString("| strategy | Critical success | Critical TTFT p50 ms | Critical TTFT p99 ms | Standard sent away | BestEffort shed | cross-region share |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, name := range []string{"spillway", "local_only", "round_robin"} {
		r := rep.Strategies[name]
		fmt.Fprintf(&s, "| %s | %.4f | %.0f | %.0f | %.3f | %.3f | %.3f |\n", name, r.CriticalSuccess, r.CriticalTTFTp50, r.CriticalTTFTp99,
			r.StandardSpilledShare, r.BestEffortShedShare, r.CrossRegionShare)
	}
	fmt.Fprintf(&s, "\nCritical TTFT p99, Spillway ÷ local-only: **%.2f**; ÷ round-robin: **%.2f**. A region killed mid-burst (us-west, the nearest target) left us-east's spill targets after %.2f s; %d requests went to it after that.\n\n![load, spill rate and TTFT per region](benchmarks/spill.png)\n",
		rep.CriticalP99RatioLocalOnly, rep.CriticalP99RatioRoundRobin, rep.DeadClusterDetectS, rep.RequestsToDeadAfterDetect)
	fmt.Fprintf(&s, "\n**Cache-aware spill.** Run %s. %s.\n\n| ranking | spilled requests | prefix-cache hit rate | TTFT p50 ms | TTFT p99 ms | served by | served in the context's home region |\n| --- | ---: | ---: | ---: | ---: | --- | ---: |\n", cmp.Or(rep.RAG.Date, rep.Date), rep.RAG.Scenario)
	for _, row := range []struct {
		name string
		r    ragResult
	}{{"cache-aware (prefix sketches)", rep.RAG.Aware}, {"cache-blind (`--prefix-sketch=false`)", rep.RAG.Blind}} {
		home, away := row.r.atHome()
		fmt.Fprintf(&s, "| %s | %d | %.3f | %.0f | %.0f | %s | %d of %d |\n", row.name, row.r.SpilledRequests, row.r.PrefixHitRate, row.r.TTFTp50, row.r.TTFTp99, byRegion(row.r.ByRegion), home, away)
	}
	fmt.Fprintf(&s, "\nSpilled prefix hit rate, cache-aware ÷ blind: **%.2f**; spilled TTFT p50, cache-aware ÷ blind: **%.2f**.\n%s",
		ratioF(rep.SpilledPrefixHitRateCacheAware, rep.SpilledPrefixHitRateBlind), rep.SpilledTTFTp50RatioAwareBlind, end)
	doc = doc[:i] + s.String() + doc[j+len(end):]
	return os.WriteFile(path, []byte(doc), 0o644)
}

// byRegion lists requests by region, in name order.
func byRegion(m map[string]int) string {
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", r, m[r]))
	}
	return strings.Join(parts, ", ")
}

func ratioF(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
