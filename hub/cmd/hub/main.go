// Command hub runs the Spillway hub. See hub/app for its flags and lifecycle.
package main

import (
	"github.com/spillway-io/spillway/hub/app"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(app.NewCommand()) }
