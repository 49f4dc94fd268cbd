// Command fleet runs a whole local Spillway fleet, the one `make demo` starts: a hub with
// embedded etcd, three regional spokes and their simulated model servers. It prints the fleet as
// hubctl shows it once everything is up, and runs until Ctrl-C or --duration.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/localfleet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

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
	hubctl := filepath.Join(binDir, "hubctl")
	for _, what := range []string{"clusters", "pools", "imports"} {
		fmt.Printf("\n$ hubctl get %s\n", what)
		c := exec.CommandContext(ctx, hubctl, "--hub", o.HubGRPC, "get", what)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("hubctl get %s: %w", what, err)
		}
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
