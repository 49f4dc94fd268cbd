package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func rusageSeconds(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// TestCPUSecondsAgreesWithGetrusage: the CPU time read from /proc is the kernel's own account of
// this process, in seconds, within the clock ticks /proc counts in.
func TestCPUSecondsAgreesWithGetrusage(t *testing.T) {
	pid := os.Getpid()
	start, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn at least 0.2 s of CPU, as measured by the kernel.
	for x, ru0 := 0, rusageSeconds(t); rusageSeconds(t)-ru0 < 0.2; x++ {
		for i := range 1_000_000 {
			x ^= i
		}
	}
	before := rusageSeconds(t)
	got, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	after := rusageSeconds(t)
	const tick = 0.02 // two ticks of /proc's clock
	if got < before-tick || got > after+tick {
		t.Fatalf("cpuSeconds %.3f s, getrusage %.3f..%.3f s", got, before, after)
	}
	if got-start < 0.2-tick {
		t.Fatalf("cpuSeconds grew %.3f s over 0.2 s of work", got-start)
	}
}

func TestThreadsAndMemoryOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	if n, err := voluntarySwitches(pid); err != nil || n <= 0 {
		t.Errorf("voluntary context switches %d, %v: a Go process's threads have blocked", n, err)
	}
	if mib, err := peakRSS(pid); err != nil || mib <= 1 {
		t.Errorf("peak RSS %v MiB, %v", mib, err)
	}
	if _, err := voluntarySwitches(1 << 30); err == nil {
		t.Error("a process that does not exist has threads")
	}
	if m := machine(); !strings.Contains(m, " cores, ") || strings.HasPrefix(m, "0 ") {
		t.Errorf("machine %q", m)
	}
}
