// Command hubctl inspects and administers a Spillway fleet through the hub's admin port. See hub/ctl.
package main

import (
	"github.com/spillway-io/spillway/hub/ctl"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(ctl.NewCommand()) }
