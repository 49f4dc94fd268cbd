// Command spoke runs the Spillway spoke of one workload cluster. See spoke/app.
package main

import (
	"github.com/spillway-io/spillway/pkg/cli"
	"github.com/spillway-io/spillway/spoke/app"
)

func main() { cli.Main(app.NewCommand()) }
