// Package cli runs the root command of a Spillway binary: with a context that ends on SIGINT or
// SIGTERM, so that every run group shuts down gracefully, and exit status 1 on error.
package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Main executes cmd and exits the process.
func Main(cmd *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}
