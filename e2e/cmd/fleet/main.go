// Command fleet runs a whole local Spillway fleet, the one `make demo` starts: a hub with
// embedded etcd, three regional spokes and their simulated model servers. It prints the fleet as
// hubctl shows it once everything is up, and runs until Ctrl-C or --duration.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	var binDir, workDir string
	var duration time.Duration
	cmd := &cobra.Command{
		Use:          "fleet",
		Short:        "Run a local Spillway fleet: hub, three regional spokes, simulated model servers",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), binDir, workDir, duration)
		},
	}
	cmd.Flags().StringVar(&binDir, "bin-dir", "bin", "directory of the hub, spoke, hubctl and modelsim binaries")
	cmd.Flags().StringVar(&workDir, "work-dir", "", "directory for logs, pool files and the hub's data (default: a new temporary directory)")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (0: run until interrupted)")
	return cmd
}

func run(ctx context.Context, binDir, workDir string, duration time.Duration) error {
	if workDir == "" {
		d, err := os.MkdirTemp("", "spillway-demo-")
		if err != nil {
			return err
		}
		workDir = d
	}
	binDir, _ = filepath.Abs(binDir)
	o := localfleet.DefaultOptions(binDir, workDir)
	fmt.Printf("starting a local fleet in %s (logs in %s)\n", workDir, filepath.Join(workDir, "logs"))
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		for _, err := range f.Stop() {
			fmt.Fprintln(os.Stderr, err)
		}
		fmt.Println("fleet stopped")
	}()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = f.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("fleet is up")
	hubctl := func(what string) error {
		fmt.Printf("\n$ hubctl get %s\n", what)
		c := exec.CommandContext(ctx, filepath.Join(binDir, "hubctl"), "--hub", o.HubGRPC, "get", what)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("hubctl get %s: %w", what, err)
		}
		return nil
	}
	for _, what := range []string{"clusters", "pools", "imports"} {
		if err := hubctl(what); err != nil {
			return err
		}
	}

	// Real load through each region's gateway → EPP → simulators, for as long as the fleet runs.
	var loads []*localfleet.Proc
	defer func() {
		for i, p := range loads {
			_ = p.Stop(30 * time.Second)
			out, _ := os.ReadFile(p.LogPath)
			fmt.Printf("\nload through the %s gateway:\n%s", o.Regions[i].Name, summaryOf(out))
		}
	}()
	for _, r := range o.Regions {
		p, err := localfleet.StartProc(filepath.Join(workDir, "logs"), "loadgen-"+r.Cluster, filepath.Join(binDir, "loadgen"),
			"--target", "http://"+r.Gateway, "--rate", "6", "--duration", "24h", "--max-tokens", "48",
			"--class", "Critical=critical:0.2", "--class", "Standard=standard:0.5", "--class", "BestEffort=batch:0.3")
		if err != nil {
			return err
		}
		loads = append(loads, p)
	}
	fmt.Printf("\nsending 6 requests/s through each region's gateway (%s); in a few seconds:\n", o.Regions[0].Gateway)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := hubctl("pools"); err != nil {
		return err
	}
	if duration > 0 {
		fmt.Printf("\nrunning for %s; Ctrl-C stops earlier\n", duration)
		var dcancel context.CancelFunc
		ctx, dcancel = context.WithTimeout(ctx, duration)
		defer dcancel()
	} else {
		fmt.Println("\nrunning until Ctrl-C; try: bin/hubctl get pools")
	}
	<-ctx.Done()
	return nil
}

// summaryOf renders the JSON summary a loadgen prints when it stops as a table.
func summaryOf(log []byte) string {
	s := string(log)
	i := strings.Index(s, "[")
	var sums []loadgen.ClassSummary
	if i < 0 || json.Unmarshal([]byte(s[i:]), &sums) != nil {
		return "(no summary: " + strings.TrimSpace(s) + ")\n"
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLASS\tREQUESTS\tSUCCEEDED\tSTATUSES\tTTFT P50\tTTFT P99")
	for _, c := range sums {
		var st []string
		for k, v := range c.Statuses {
			st = append(st, fmt.Sprintf("%s×%d", k, v))
		}
		slices.Sort(st)
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%.0f ms\t%.0f ms\n", c.Class, c.Requests, c.Succeeded, strings.Join(st, " "), c.TTFTp50, c.TTFTp99)
	}
	tw.Flush()
	return b.String()
}
