// Command hubctl inspects a Spillway fleet through its hub. See hub/ctl.
package main

import (
	"github.com/spillway-io/spillway/hub/ctl"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(ctl.NewCommand()) }
