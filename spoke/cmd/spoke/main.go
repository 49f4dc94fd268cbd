// Command spoke runs the Spillway spoke of one workload cluster. See spoke/app.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spillway-io/spillway/spoke/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.NewCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
