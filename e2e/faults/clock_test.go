package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/clock"
)

// clockOffsets are the wall-clock offsets (SPILLWAY_CLOCK_OFFSET) of the skewed run: the hub 10 s
// ahead, us-east 10 s behind, us-west 10 s ahead, eu-west on time.
var clockOffsets = map[string]string{"hub-": "10s", "spoke-us-east-1": "-10s", "spoke-us-west-1": "10s"}

// TestClockOffset: with the hub's clock 10 s ahead and the spokes' 10 s behind, 10 s ahead and on
// time, freshness decisions are those of synchronised clocks: every spoke keeps both others
// among its candidates and spill targets with capacity reports a few seconds old at most (never
// negative, never the 10 or 20 s of a comparison across clocks), the hub keeps every cluster alive
// with its capacity, no member is declared dead and no request fails.
func TestClockOffset(t *testing.T) {
	f, s, ctx := scenario(t, "±10 s clock offset between hub and spokes", Config{Env: func(name string) []string {
		for prefix, off := range clockOffsets {
			if strings.HasPrefix(name, prefix) {
				return []string{clock.OffsetEnv + "=" + off}
			}
		}
		return nil
	}})
	s.Figures["offsets"] = clockOffsets
	d := short(30*time.Second, 3*time.Minute)
	load := f.StartLoad(ctx, f.Regions, 4, d)
	watch := f.Watch(ctx, f.Regions)
	start := time.Now()
	sleepCtx(ctx, d)
	if err := f.hubReady(ctx); err != nil {
		t.Errorf("the hub with its clock 10s ahead: %v", err)
	}
	end := time.Now()
	samples := watch()
	rs, err := load.Wait()
	if err != nil {
		t.Fatal(err)
	}
	verdicts := f.DeadVerdicts()
	falsev := falseDead(verdicts, time.Time{})
	s.FalseDead(len(falsev))
	if len(falsev) > 0 {
		t.Errorf("dead verdicts with skewed clocks: %v", falsev)
	}
	var minAge, maxAge time.Duration
	incomplete, total := 0, 0
	for _, r := range f.Regions {
		for i, smp := range samples[r.Name] {
			if i == 0 && r.Index == 1 {
				minAge, maxAge = smp.MinAge, smp.MaxAge
			}
			minAge, maxAge = min(minAge, smp.MinAge), max(maxAge, smp.MaxAge)
			total++
			if len(smp.Targets) < len(f.Regions)-1 {
				incomplete++
			}
		}
	}
	s.Figures["capacity_age_min_s"], s.Figures["capacity_age_max_s"] = round(minAge.Seconds()), round(maxAge.Seconds())
	s.Figures["samples"], s.Figures["samples_with_a_target_missing"] = total, incomplete
	if minAge < 0 || maxAge > 3*time.Second {
		t.Errorf("capacity ages seen by the spokes from %s to %s: want 0 to 3s whatever the clocks say", minAge, maxAge)
	}
	if total == 0 || float64(incomplete) > 0.01*float64(total) {
		t.Errorf("%d of %d /spill samples miss a live region among the targets", incomplete, total)
	}
	n, lost := importsDeleted(samples, f.clusters(), start, end)
	s.Figures["spill_candidates_lost"] = n
	if n > 0 {
		t.Errorf("live clusters gone from a spoke's spill candidates with skewed clocks: %v", lost)
	}
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"], s.Figures["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
	if sum.Total() > 0 {
		t.Errorf("failed requests: %v, e.g. %v", sum.Failed, sum.Examples)
	}
}
