// Command scalebench is `make bench-scale`: for each fleet size, a real hub process and that
// many simulated spokes over mutual TLS (e2e/scale), measured in steady state and across a hub
// restart. It writes docs/benchmarks/scale.json and the plot docs/benchmarks/scale.png, and with
// --profile-dir the hub's CPU and heap profiles at each size with their top items.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/scale"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

type options struct {
	sizes                       []int
	fewImportersAt              []int
	fewImporters, mustHold      int
	replot                      bool
	twoReplicasAt               int
	binDir, workDir, profileDir string
	jsonPath, plotPath, doc     string
	run                         scale.Options
}

func newCommand() *cobra.Command {
	o := options{}
	cmd := &cobra.Command{
		Use:          "scalebench",
		Short:        "One hub against fleets of simulated spokes: fleet-view staleness, hub CPU and memory, etcd writes, restarts",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.replot {
				return replot(o)
			}
			return run(cmd.Context(), o, cmd.CommandPath())
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&o.sizes, "spokes", []int{100, 300, 1000, 3000}, "fleet sizes to run, one after the other")
	f.IntVar(&o.run.Pools, "pools", 2, "pools each spoke exports")
	f.IntVar(&o.run.Endpoints, "endpoints", 50, "endpoints of each pool")
	f.DurationVar(&o.run.ReportInterval, "report-interval", time.Second, "how often each spoke reports its pools' capacity")
	f.BoolVar(&o.run.ReportEndpoints, "report-endpoints", false, "send per-endpoint detail with each report (a spoke's --report-endpoints)")
	f.Float64Var(&o.run.ImportFraction, "import-fraction", 0.2, "fraction of the spokes that import every pool (and want every pool's capacity)")
	f.IntVar(&o.run.Observers, "observers", 50, "how many of the importing spokes measure staleness (0: all)")
	f.DurationVar(&o.run.Settle, "settle", 10*time.Second, "how long the fleet runs once converged before the measurement")
	f.DurationVar(&o.run.Measure, "measure", 30*time.Second, "the steady-state measurement window")
	f.DurationVar(&o.run.ConvergeTimeout, "converge-timeout", 3*time.Minute, "longest wait for every spoke to converge")
	f.BoolVar(&o.run.Restart, "restart", true, "restart the hub after the measurement and time the fleet's reconnection")
	f.StringSliceVar(&o.run.HubArgs, "hub-arg", nil, "further hub flag, as --flag=value (repeatable)")
	f.IntSliceVar(&o.fewImportersAt, "few-importers-at", []int{300, 1000, 3000}, "after the sizes, run these with --few-importers importing spokes: what grows with the fleet without the fan-out to a fixed fraction of it")
	f.IntVar(&o.fewImporters, "few-importers", 20, "importing spokes of the --few-importers-at runs (0: skip them)")
	f.IntVar(&o.mustHold, "must-hold", 1000, "the command fails when a fleet of at most this many spokes (or the two-replica run) fails; larger ones are the growth curve, recorded whether this machine holds them or not")
	f.IntVar(&o.twoReplicasAt, "two-replicas-at", 1000, "after the sizes, run this many spokes on two hub replicas on a three-member etcd cluster (0: skip)")
	f.StringVar(&o.run.EtcdBin, "etcd-bin", filepath.Join(os.Getenv("SPILLWAY_K8S_BIN_DIR"), "etcd"), "etcd binary of the two-replica run (hack/k8s-bins.sh builds it)")
	f.StringVar(&o.binDir, "bin-dir", "bin", "directory of the hub and hubctl binaries")
	f.StringVar(&o.workDir, "work-dir", "", "directory for the hubs' data and logs (default: a temporary one, removed after a successful run)")
	f.StringVar(&o.profileDir, "profile-dir", "", "directory for the hub's CPU and heap profiles and their top items (none when empty)")
	f.StringVar(&o.jsonPath, "json", "docs/benchmarks/scale.json", "where the figures go, as JSON")
	f.StringVar(&o.plotPath, "plot", "docs/benchmarks/scale.png", "where the plot of CPU, memory and staleness against the fleet size goes")
	f.BoolVar(&o.replot, "replot", false, "draw the plot again from the figures of --json, without running anything")
	f.StringVar(&o.doc, "update-doc", "docs/benchmarks.md", "markdown file whose scale section is replaced (empty: none)")
	return cmd
}

// report is docs/benchmarks/scale.json.
type report struct {
	Date    string         `json:"date"`
	Command string         `json:"command"`
	Options map[string]any `json:"options"`
	Results []scale.Result `json:"results"`
	// FewImporters are the runs with a fixed, small number of importing spokes.
	FewImporters []scale.Result `json:"few_importers,omitempty"`
	// TwoReplicas is the run on two hub replicas.
	TwoReplicas *scale.Result `json:"two_replicas,omitempty"`
}

func run(ctx context.Context, o options, name string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	work := o.workDir
	if work == "" {
		dir, err := os.MkdirTemp("", "scalebench-")
		if err != nil {
			return err
		}
		work = dir
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	rep := report{
		Date:    time.Now().UTC().Format(time.DateOnly),
		Command: strings.Join(append([]string{filepath.Base(name)}, os.Args[1:]...), " "),
		Options: map[string]any{
			"pools_per_spoke": o.run.Pools, "endpoints_per_pool": o.run.Endpoints, "report_interval": o.run.ReportInterval.String(),
			"report_endpoints": o.run.ReportEndpoints, "import_fraction": o.run.ImportFraction, "observers": o.run.Observers, "few_importers": o.fewImporters, "measure": o.run.Measure.String(),
		},
	}
	// The sizes with a fraction of the spokes importing, then with a few, then two replicas.
	type fleetRun struct {
		spokes, importers, replicas int
		series                      *[]scale.Result
	}
	var runs []fleetRun
	for _, n := range o.sizes {
		runs = append(runs, fleetRun{spokes: n, replicas: 1, series: &rep.Results})
	}
	for _, n := range o.fewImportersAt {
		if o.fewImporters <= 0 {
			break
		}
		runs = append(runs, fleetRun{spokes: n, importers: o.fewImporters, replicas: 1, series: &rep.FewImporters})
	}
	var two []scale.Result
	if o.twoReplicasAt > 0 {
		runs = append(runs, fleetRun{spokes: o.twoReplicasAt, replicas: 2, series: &two})
	}
	var failed []error
	failedSeries := map[*[]scale.Result]bool{} // a size failed: the larger ones of its series are not tried
	for _, fr := range runs {
		if failedSeries[fr.series] {
			continue
		}
		n := fr.spokes
		ro := o.run
		ro.Spokes, ro.BinDir, ro.Log, ro.Replicas, ro.Importers = n, o.binDir, log, fr.replicas, fr.importers
		name := fmt.Sprintf("spokes-%d", n)
		tag := ""
		switch {
		case fr.replicas > 1:
			name += "-two-replicas"
		case fr.importers > 0:
			name += fmt.Sprintf("-%d-importers", fr.importers)
			tag = fmt.Sprintf("%d-importers-", fr.importers)
		}
		if fr.replicas == 1 {
			ro.ProfileDir, ro.ProfileTag = o.profileDir, tag
		}
		ro.WorkDir = filepath.Join(work, name)
		if err := os.MkdirAll(ro.WorkDir, 0o700); err != nil {
			return err
		}
		log.Info("fleet starting", "spokes", n, "replicas", ro.Replicas, "importers", fr.importers)
		res, err := scale.Run(ctx, ro)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("interrupted at %d spokes: nothing written: %w", n, err)
		}
		if err != nil {
			// Recorded with what was measured before it: a fleet this machine cannot hold is
			// a result too.
			res.Spokes, res.Replicas, res.Error = n, ro.Replicas, err.Error()
			log.Error("fleet failed", "spokes", n, "replicas", ro.Replicas, "importers", res.Importers, "err", err, "logs", ro.WorkDir)
			if n <= o.mustHold || fr.replicas > 1 {
				failed = append(failed, fmt.Errorf("%d spokes on %d replicas (logs in %s): %w", n, ro.Replicas, ro.WorkDir, err))
			}
			failedSeries[fr.series] = true
		}
		line, _ := json.Marshal(res)
		fmt.Printf("%s\n", line)
		*fr.series = append(*fr.series, res)
		if err == nil && ro.ProfileDir != "" {
			if err := topOf(o.binDir, o.profileDir, tag+fmt.Sprint(n)); err != nil {
				return err
			}
		}
	}
	if len(two) > 0 {
		rep.TwoReplicas = &two[0]
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.jsonPath, append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := drawPlot(rep.Results, rep.FewImporters, o.run.ImportFraction, o.fewImporters, o.plotPath); err != nil {
		return err
	}
	if o.doc != "" {
		if err := updateDoc(o.doc, rep); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return errors.Join(failed...)
	}
	if o.workDir == "" {
		return os.RemoveAll(work)
	}
	return nil
}

// topOf writes the top items of the CPU and heap profiles of the run tagged tag beside them.
func topOf(binDir, dir, tag string) error {
	for _, kind := range []string{"cpu", "heap"} {
		prof := filepath.Join(dir, fmt.Sprintf("hub-%s-%s.pprof", tag, kind))
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", filepath.Join(binDir, "hub"), prof).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go tool pprof %s: %w: %s", prof, err, out)
		}
		if err := os.WriteFile(strings.TrimSuffix(prof, ".pprof")+".top.txt", out, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// replot draws the plot of the figures in o.jsonPath.
func replot(o options) error {
	b, err := os.ReadFile(o.jsonPath)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", o.jsonPath, err)
	}
	fraction, _ := rep.Options["import_fraction"].(float64)
	few, _ := rep.Options["few_importers"].(float64)
	return drawPlot(rep.Results, rep.FewImporters, fraction, int(few), o.plotPath)
}
