package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/localfleet"
)

// The active-active run: the routing-quality workload through one spoke, then through several
// spoke replicas of one cluster behind a round-robin gateway, with their prefix-affinity index
// shared (pkg/affinity) and without. Targets (issue 12): shared hit rate within 2 points of one
// replica's, shared TTFT p50 at most 1.1× one replica's.
const (
	setupOne         = "one"
	setupIndependent = "independent"
	setupShared      = "shared"

	targetHitRateGapPoints = 2
	targetTTFTp50Ratio     = 1.1

	replicasBeginMarker = "<!-- epp-replicas:begin (written by make bench-epp BENCH_ARGS=replicas) -->"
	replicasEndMarker   = "<!-- epp-replicas:end -->"
	replicasCommand     = "make bench-epp BENCH_ARGS=replicas"
)

var setups = []string{setupOne, setupIndependent, setupShared}

func newReplicasCommand() *cobra.Command {
	var o options
	var doc, jsonPath string
	cmd := &cobra.Command{
		Use:   "replicas",
		Short: "Routing quality of several spoke replicas behind a round-robin gateway, with and without shared prefix affinity, against one replica",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.replicas < 2 || o.rounds < 1 || o.qualityDuration <= 0 || o.qualityEndpoints < 1 {
				return errors.New("--replicas must be at least 2, --rounds at least 1, --quality-duration and --quality-endpoints positive")
			}
			rep, err := runReplicas(cmd.Context(), o)
			if err != nil {
				return err
			}
			rep.Command = replicasCommandLine(cmd)
			if doc != "" {
				if err := updateSection(doc, replicasBeginMarker, replicasEndMarker, rep.markdown()); err != nil {
					return err
				}
			}
			return writeJSON(jsonPath, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.binDir, "bin-dir", "bin", "directory of Spillway's binaries")
	f.StringVar(&o.workDir, "work-dir", "", "directory for logs and state (default: a temporary one)")
	f.IntVar(&o.replicas, "replicas", 3, "spoke replicas behind the round-robin gateway")
	f.IntVar(&o.rounds, "rounds", 2, "rounds; the setups take turns in each, and each figure is the mean")
	f.Float64Var(&o.qualityRate, "quality-rate", 40, "requests per second")
	f.DurationVar(&o.qualityDuration, "quality-duration", 30*time.Second, "length of each run")
	f.IntVar(&o.qualityEndpoints, "quality-endpoints", 10, "simulated endpoints")
	f.StringArrayVar(&o.spillwayEnv, "spillway-env", nil, "NAME=VALUE added to the spokes' environment; repeatable")
	f.StringVar(&doc, "update-doc", "", "markdown file whose active-active section is replaced with the results")
	f.StringVar(&jsonPath, "json", "", "file to write the results to as JSON (default: standard output)")
	return cmd
}

// replicasCommandLine is the make command that runs the replicas command with the flags given
// that change what is measured.
func replicasCommandLine(cmd *cobra.Command) string {
	var args []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "bin-dir", "work-dir", "json", "update-doc":
		default:
			args = append(args, fmt.Sprintf("--%s=%s", f.Name, f.Value))
		}
	})
	if len(args) == 0 {
		return replicasCommand
	}
	return fmt.Sprintf("make bench-epp BENCH_ARGS='replicas %s'", strings.Join(args, " "))
}

// roundRobin is the gateway's ext_proc client over several EPP replicas: request i goes to
// replica i mod n, as a gateway balancing ext_proc streams round-robin does (one stream per
// request).
type roundRobin struct {
	eps  []extprocv3.ExternalProcessorClient
	next atomic.Uint64
}

func (r *roundRobin) Process(ctx context.Context, opts ...grpc.CallOption) (extprocv3.ExternalProcessor_ProcessClient, error) {
	i := r.next.Add(1) - 1
	return r.eps[i%uint64(len(r.eps))].Process(ctx, opts...)
}

// affinityCounters sum the shared setup's spillway_epp_affinity_* counters over its replicas.
type affinityCounters struct {
	SentBlocks     float64 `json:"sent_blocks"`
	ReceivedBlocks float64 `json:"received_blocks"`
	DroppedBlocks  float64 `json:"dropped_blocks"`
	Messages       float64 `json:"sent_messages"`
}

type replicasRound struct {
	Setup   string             `json:"setup"`
	Round   int                `json:"round"`
	Quality qualityMeasurement `json:"quality"`
}

type replicasReport struct {
	Date    string `json:"date"`
	Command string `json:"command"`
	Machine string `json:"machine"`
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute averages at the start and at the end:
	// the machine is shared, and the TTFT figures move with its load.
	LoadAverage    string   `json:"load_average_start"`
	LoadAverageEnd string   `json:"load_average_end"`
	SpillwayEnv    []string `json:"spillway_env,omitempty"`
	Replicas       int      `json:"replicas"`
	Endpoints      int      `json:"endpoints"`
	Rate           float64  `json:"rate_rps"`
	Rounds         int      `json:"rounds"`
	// One, Independent and Shared are the means over the rounds (requests summed).
	One         qualityMeasurement `json:"one_replica"`
	Independent qualityMeasurement `json:"independent_replicas"`
	Shared      qualityMeasurement `json:"shared_replicas"`
	// The gaps are one replica's hit rate minus the setup's, in percentage points; the ratios
	// the setup's TTFT p50 over one replica's.
	SharedHitRateGapPoints      float64          `json:"shared_hit_rate_gap_points"`
	SharedTTFTp50Ratio          float64          `json:"shared_ttft_p50_ratio"`
	IndependentHitRateGapPoints float64          `json:"independent_hit_rate_gap_points"`
	IndependentTTFTp50Ratio     float64          `json:"independent_ttft_p50_ratio"`
	TargetsMet                  bool             `json:"targets_met"`
	Affinity                    affinityCounters `json:"shared_affinity_counters"`
	Detail                      []replicasRound  `json:"rounds_detail"`
}

// runReplicas measures every setup in rounds; within a round the setups take turns, in an order
// that rotates between rounds, each on fresh simulators.
func runReplicas(ctx context.Context, o options) (*replicasReport, error) {
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "spillway-eppbench-replicas-")
		if err != nil {
			return nil, err
		}
		o.workDir = d
	}
	if err := os.MkdirAll(o.workDir, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "work directory %s\n", o.workDir)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(o.workDir, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	rep := &replicasReport{Date: time.Now().UTC().Format(time.RFC3339), Command: replicasCommand, Machine: machine(),
		LoadAverage: loadAverage(), SpillwayEnv: o.spillwayEnv, Replicas: o.replicas, Endpoints: o.qualityEndpoints,
		Rate: o.qualityRate, Rounds: o.rounds}
	ips := endpointIPs(o.qualityEndpoints)
	for round := range o.rounds {
		for k := range setups {
			setup := setups[(k+round)%len(setups)]
			fmt.Fprintf(os.Stderr, "== round %d, %s (load %s)\n", round+1, setup, loadAverage())
			q, ac, err := o.measureSetup(ctx, setup, round, ips, keyFile)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", setup, round+1, err)
			}
			rep.Detail = append(rep.Detail, replicasRound{Setup: setup, Round: round + 1, Quality: q})
			rep.Affinity.SentBlocks += ac.SentBlocks
			rep.Affinity.ReceivedBlocks += ac.ReceivedBlocks
			rep.Affinity.DroppedBlocks += ac.DroppedBlocks
			rep.Affinity.Messages += ac.Messages
		}
	}
	rep.LoadAverageEnd = loadAverage()
	rep.summarize()
	return rep, nil
}

// summarize takes the means over the rounds, the gaps, the ratios and whether the targets hold.
func (r *replicasReport) summarize() {
	means := map[string]*qualityMeasurement{setupOne: &r.One, setupIndependent: &r.Independent, setupShared: &r.Shared}
	counts := map[string]int{}
	for _, d := range r.Detail {
		counts[d.Setup]++
	}
	for _, d := range r.Detail {
		m, n := means[d.Setup], float64(counts[d.Setup])
		m.Requests += d.Quality.Requests
		m.Succeeded += d.Quality.Succeeded
		m.TTFTp50ms += d.Quality.TTFTp50ms / n
		m.TTFTp99ms += d.Quality.TTFTp99ms / n
		m.PrefixHitRate += d.Quality.PrefixHitRate / n
	}
	for _, m := range means {
		m.TTFTp50ms, m.TTFTp99ms, m.PrefixHitRate = round3(m.TTFTp50ms), round3(m.TTFTp99ms), round3(m.PrefixHitRate)
	}
	points := func(m qualityMeasurement) float64 { return math.Round((r.One.PrefixHitRate-m.PrefixHitRate)*1000) / 10 }
	r.SharedHitRateGapPoints, r.IndependentHitRateGapPoints = points(r.Shared), points(r.Independent)
	r.SharedTTFTp50Ratio = ratio(r.Shared.TTFTp50ms, r.One.TTFTp50ms)
	r.IndependentTTFTp50Ratio = ratio(r.Independent.TTFTp50ms, r.One.TTFTp50ms)
	r.TargetsMet = r.One.Requests > 0 && r.Shared.Succeeded == r.Shared.Requests &&
		r.SharedHitRateGapPoints <= targetHitRateGapPoints && r.SharedTTFTp50Ratio <= targetTTFTp50Ratio
}

// measureSetup starts fresh simulators and the setup's spokes, and runs the workload through
// them.
func (o options) measureSetup(ctx context.Context, setup string, round int, ips []string, keyFile string) (qualityMeasurement, affinityCounters, error) {
	var ac affinityCounters
	dir := filepath.Join(o.workDir, fmt.Sprintf("%s-%d", setup, round+1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return qualityMeasurement{}, ac, err
	}
	sims, err := o.startSims(ctx, dir, ips)
	if err != nil {
		return qualityMeasurement{}, ac, err
	}
	var procs []*localfleet.Proc
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		for _, p := range append(procs, sims...) {
			_ = p.Stop(10 * time.Second)
		}
	}()
	n := o.replicas
	if setup == setupOne {
		n = 1
	}
	addrs := make([]spokeAddrs, n)
	rings := make([]string, n)
	for i := range n {
		addrs[i] = spokeAddrs{name: fmt.Sprintf("spoke-%d", i), extProc: fmt.Sprintf("127.0.0.1:%d", 9200+i), http: fmt.Sprintf("127.0.0.1:%d", 9300+i)}
		rings[i] = fmt.Sprintf("127.0.0.1:%d", 9400+i)
	}
	every := scrapeInterval(len(ips))
	rr := &roundRobin{}
	for i, a := range addrs {
		var extra []string
		if setup == setupShared {
			peers := append(append([]string(nil), rings[:i]...), rings[i+1:]...)
			extra = []string{"--replica-address", rings[i], "--replica-peers", strings.Join(peers, ","), "--gossip-key-file", keyFile}
		}
		p, err := o.startSpoke(ctx, dir, a, ips, every, extra...)
		if err != nil {
			return qualityMeasurement{}, ac, err
		}
		procs = append(procs, p)
		conn, err := gateway.DialEPP(a.extProc, gateway.EPPTLS{Insecure: true})
		if err != nil {
			return qualityMeasurement{}, ac, err
		}
		conns = append(conns, conn)
		rr.eps = append(rr.eps, extprocv3.NewExternalProcessorClient(conn))
	}
	if setup == setupShared {
		for i, a := range addrs {
			err := waitFor(ctx, procs[i], 30*time.Second, func() error {
				v, err := metricValue(ctx, "http://"+a.http+"/metrics", "spillway_epp_affinity_replicas", nil)
				if err == nil && int(v) != n {
					err = fmt.Errorf("%s sees %v replicas of %d", a.name, v, n)
				}
				return err
			})
			if err != nil {
				return qualityMeasurement{}, ac, err
			}
		}
	}
	q, err := o.quality(ctx, &gateway.Client{EPP: rr}, ips, filepath.Join(dir, "results.json"))
	if err != nil || setup != setupShared {
		return q, ac, err
	}
	for _, a := range addrs {
		url := "http://" + a.http + "/metrics"
		for name, into := range map[string]*float64{
			"spillway_epp_affinity_sent_blocks_total":     &ac.SentBlocks,
			"spillway_epp_affinity_received_blocks_total": &ac.ReceivedBlocks,
			"spillway_epp_affinity_dropped_blocks_total":  &ac.DroppedBlocks,
			"spillway_epp_affinity_sent_messages_total":   &ac.Messages,
		} {
			page, err := scrape(ctx, url)
			if err != nil {
				return q, ac, err
			}
			v, err := sampleSum(page, name, nil)
			if err != nil {
				return q, ac, fmt.Errorf("%s: %w", url, err)
			}
			*into += v
		}
	}
	fmt.Fprintf(os.Stderr, "   affinity: sent %.0f blocks in %.0f messages, received %.0f, dropped %.0f\n", ac.SentBlocks, ac.Messages, ac.ReceivedBlocks, ac.DroppedBlocks)
	return q, ac, nil
}

// markdown renders the report as the active-active section of docs/benchmarks.md.
func (r *replicasReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s, with `%s`; load average (1, 5, 15 min) %s at the start, %s at the end.", r.Date, r.Machine, r.Command, r.LoadAverage, r.LoadAverageEnd)
	if len(r.SpillwayEnv) > 0 {
		fmt.Fprintf(&b, " The spokes ran with %s in their environment.", strings.Join(r.SpillwayEnv, " "))
	}
	fmt.Fprintf(&b, " %d endpoints, %.0f requests/s with 8 shared 4 KB prefixes (the seeded routing-quality workload); each figure is the mean of %d rounds in which the setups took turns on fresh simulators.\n\n", r.Endpoints, r.Rate, r.Rounds)
	b.WriteString("| setup | requests | succeeded | TTFT p50 ms | TTFT p99 ms | prefix-cache hit rate | hit rate vs one replica (points) | TTFT p50 ÷ one replica |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| one replica | %d | %d | %.1f | %.1f | %.3f | – | – |\n", r.One.Requests, r.One.Succeeded, r.One.TTFTp50ms, r.One.TTFTp99ms, r.One.PrefixHitRate)
	fmt.Fprintf(&b, "| %d replicas, shared affinity | %d | %d | %.1f | %.1f | %.3f | %+.1f | **%.2f** |\n", r.Replicas, r.Shared.Requests, r.Shared.Succeeded, r.Shared.TTFTp50ms, r.Shared.TTFTp99ms, r.Shared.PrefixHitRate, -r.SharedHitRateGapPoints, r.SharedTTFTp50Ratio)
	fmt.Fprintf(&b, "| %d replicas, independent | %d | %d | %.1f | %.1f | %.3f | %+.1f | %.2f |\n", r.Replicas, r.Independent.Requests, r.Independent.Succeeded, r.Independent.TTFTp50ms, r.Independent.TTFTp99ms, r.Independent.PrefixHitRate, -r.IndependentHitRateGapPoints, r.IndependentTTFTp50Ratio)
	verdict := "met"
	if !r.TargetsMet {
		verdict = "**not met**"
	}
	fmt.Fprintf(&b, "\nTargets (shared: hit rate within %d points of one replica, TTFT p50 ≤ %.1f×): %s. ", targetHitRateGapPoints, targetTTFTp50Ratio, verdict)
	fmt.Fprintf(&b, "The shared replicas sent %.0f block hashes in %.0f messages, received %.0f and dropped %.0f (all rounds).\n", r.Affinity.SentBlocks, r.Affinity.Messages, r.Affinity.ReceivedBlocks, r.Affinity.DroppedBlocks)
	return b.String()
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

// writeJSON writes v indented to path, or to standard output when path is empty.
func writeJSON(path string, v any) error {
	out := os.Stdout
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
