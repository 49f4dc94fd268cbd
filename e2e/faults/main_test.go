package faults

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var full = flag.Bool("faults.full", false, "run every scenario for its full duration (the loss for 10 minutes, the churn for 30) instead of the short form")

// TestMain runs the scenarios, writes faults.json to $SPILLWAY_FAULTS_OUT when set, and fails
// when a goroutine outlives them (watchers, loads, relays).
func TestMain(m *testing.M) {
	flag.Parse()
	start := time.Now()
	code := m.Run()
	if out := os.Getenv("SPILLWAY_FAULTS_OUT"); out != "" && len(results.scenarios) > 0 {
		cmd := os.Getenv("SPILLWAY_FAULTS_COMMAND")
		if cmd == "" {
			cmd = "make e2e-faults"
		}
		if err := results.report(*full, cmd, time.Since(start)).write(out); err != nil {
			fmt.Fprintln(os.Stderr, "faults.json:", err)
			code = 1
		} else {
			fmt.Println("wrote", out)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}
