// Command hub runs the Spillway hub. See hub/app for its flags and lifecycle.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spillway-io/spillway/hub/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.NewCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
