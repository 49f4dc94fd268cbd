// Command eppbench runs Spillway's EPP and GIE v1.5.0's EPP side by side on the same simulated
// endpoints with the same ext_proc load, and reports latency, CPU, memory and routing quality.
// `make bench-epp` runs it inside a network namespace with only lo up (GIE's EPP binds fixed ports
// on every interface), with a real kube-apiserver for GIE's InferencePool and Pods.
//
// Both EPPs serve ext_proc in plaintext, each by an explicit flag (Spillway's
// --epp-secure-serving=false with --insecure-http, GIE's --secure-serving=false), and the
// do-nothing baseline too: like is compared with like, and the figures measure the EPPs' work
// rather than TLS, whose cost is the same library's on both sides.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	var o options
	var counts, doc, jsonPath string
	cmd := &cobra.Command{
		Use:          "eppbench",
		Short:        "Benchmark Spillway's EPP against GIE's EPP",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(counts); err != nil {
				return err
			}
			rep, err := run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if doc != "" {
				if err := updateDoc(doc, rep); err != nil {
					return err
				}
			}
			out := os.Stdout
			if jsonPath != "" {
				if out, err = os.Create(jsonPath); err != nil {
					return err
				}
				defer out.Close()
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.binDir, "bin-dir", "bin", "directory of Spillway's binaries")
	f.StringVar(&o.k8sBinDir, "k8s-bin-dir", "", "directory of kube-apiserver and etcd (hack/k8s-bins.sh)")
	f.StringVar(&o.gieDir, "gie-dir", "", "directory of GIE's epp binary and CRDs (hack/gie-epp.sh)")
	f.StringVar(&o.workDir, "work-dir", "", "directory for logs and state (default: a temporary one)")
	f.StringVar(&counts, "endpoints", "10,100,1000", "endpoint counts to measure")
	f.IntVar(&o.rounds, "rounds", 2, "rounds per endpoint count; the EPPs take turns and each figure is the mean")
	f.StringArrayVar(&o.spillwayEnv, "spillway-env", nil, "NAME=VALUE added to the spoke's environment (e.g. GOMAXPROCS=1); repeatable")
	f.StringArrayVar(&o.spillwayArgs, "spillway-arg", nil, "an argument added to the measured spoke's (e.g. --scrape-all-families); repeatable")
	f.IntVar(&o.requests, "requests", 1000, "ext_proc requests per latency run")
	f.IntVar(&o.concurrency, "concurrency", 16, "concurrent ext_proc streams of the concurrent run")
	f.DurationVar(&o.idle, "idle", 10*time.Second, "how long idle CPU is measured")
	f.Float64Var(&o.qualityRate, "quality-rate", 40, "requests per second of the routing-quality run")
	f.DurationVar(&o.qualityDuration, "quality-duration", 30*time.Second, "length of the routing-quality run")
	f.IntVar(&o.qualityEndpoints, "quality-endpoints", 10, "endpoints of the routing-quality run")
	f.StringVar(&doc, "update-doc", "", "markdown file whose EPP benchmark section is replaced with the results")
	f.StringVar(&jsonPath, "json", "", "file to write the results to as JSON (default: standard output)")
	cmd.AddCommand(newNoopCommand(), newReplicasCommand())
	return cmd
}

// complete checks the flags and sets the endpoint counts from --endpoints.
func (o *options) complete(counts string) error {
	for _, e := range o.spillwayEnv {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--spillway-env %q: want NAME=VALUE", e)
		}
	}
	if o.rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1", o.rounds)
	}
	for _, c := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 || n > 2000 {
			return fmt.Errorf("--endpoints %q: want counts in 1..2000", counts)
		}
		o.counts = append(o.counts, n)
	}
	return nil
}

// newNoopCommand is the do-nothing ext_proc server of the baseline, started by eppbench itself.
func newNoopCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    "noop-server",
		Short:  "Serve ext_proc answering every request phase at once (the benchmark's floor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveNoop(cmd.Context(), addr)
		},
	}
	cmd.Flags().StringVar(&addr, "listen", noopAddress, "address to listen on")
	return cmd
}
