// Command hubctl inspects a Spillway fleet through its hub. See hub/ctl.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/spillway-io/spillway/hub/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := ctl.NewCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
