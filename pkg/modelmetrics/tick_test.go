package modelmetrics

import (
	"testing"
	"time"
)

// TestScrapesShareTheirInstants: every loop waits for the next multiple of the interval on the
// wall clock, so the scrapes of all endpoints start together, never at once again (a wait of
// zero) and never later than one interval.
func TestScrapesShareTheirInstants(t *testing.T) {
	const interval = 50 * time.Millisecond
	base := time.Unix(1_800_000_000, 0) // a multiple of the interval
	for _, tc := range []struct{ after, want time.Duration }{
		{0, interval},
		{time.Millisecond, 49 * time.Millisecond},
		{49 * time.Millisecond, time.Millisecond},
		{interval + 20*time.Millisecond, 30 * time.Millisecond},
	} {
		if got := untilTick(base.Add(tc.after), interval); got != tc.want {
			t.Errorf("%s after a tick: wait %s, want %s", tc.after, got, tc.want)
		}
	}
}
