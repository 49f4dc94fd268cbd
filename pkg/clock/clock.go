// Package clock is the wall clock of Spillway's processes: every timestamp that leaves a process
// (a report's observed_at, the hub's received_at and last_seen, a revocation's time) is read
// from Now.
//
// The environment variable SPILLWAY_CLOCK_OFFSET (a Go duration such as "10s" or "-10s") shifts
// it, as a host whose clock is off by that much would. The fault suite (e2e/faults) sets it to
// prove that freshness is judged on one clock: ages are measured by the process that holds both
// ends of the interval, and only durations cross between hosts. Operators never set it.
package clock

import (
	"fmt"
	"os"
	"time"
)

// OffsetEnv names the environment variable that shifts Now.
const OffsetEnv = "SPILLWAY_CLOCK_OFFSET"

var offset = mustOffset(os.Getenv(OffsetEnv))

func mustOffset(v string) time.Duration {
	d, err := ParseOffset(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", OffsetEnv, err)
		os.Exit(2)
	}
	return d
}

// ParseOffset parses a clock offset: empty is none.
func ParseOffset(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 10s or -10s: %w", err)
	}
	return d, nil
}

// Now returns the current time, shifted by SPILLWAY_CLOCK_OFFSET. Its monotonic reading is
// shifted alike, so durations between two readings are exact.
func Now() time.Time { return time.Now().Add(offset) }

// Offset returns the offset Now applies.
func Offset() time.Duration { return offset }
