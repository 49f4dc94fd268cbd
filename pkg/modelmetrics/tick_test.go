package modelmetrics

import (
	"fmt"
	"testing"
	"time"
)

// TestScrapesShareTheirInstants: a loop waits for the next instant of its slot (an offset after
// each multiple of the interval on the wall clock), so the endpoints of a slot are scraped
// together; never at once again (a wait of zero) and never later than one interval.
func TestScrapesShareTheirInstants(t *testing.T) {
	const interval = 50 * time.Millisecond
	base := time.Unix(1_800_000_000, 0) // a multiple of the interval
	for _, tc := range []struct{ after, offset, want time.Duration }{
		{0, 0, interval},
		{time.Millisecond, 0, 49 * time.Millisecond},
		{49 * time.Millisecond, 0, time.Millisecond},
		{interval + 20*time.Millisecond, 0, 30 * time.Millisecond},
		{0, 10 * time.Millisecond, 10 * time.Millisecond},
		{10 * time.Millisecond, 10 * time.Millisecond, interval},
		{30 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond},
	} {
		if got := untilTick(base.Add(tc.after), interval, tc.offset); got != tc.want {
			t.Errorf("%s after a tick, offset %s: wait %s, want %s", tc.after, tc.offset, got, tc.want)
		}
	}
}

// TestScrapeSlots: endpoints are spread by address over the slots, about scrapeBatch a slot, each
// slot's offset one of the interval's equal parts; with one slot every endpoint is scraped at
// the interval's multiples.
func TestScrapeSlots(t *testing.T) {
	const interval = time.Second
	if got := scrapeOffset(slotHash("10.0.0.1:8000"), interval, 1); got != 0 {
		t.Errorf("one slot: offset %s, want 0", got)
	}
	const n = 1000
	slots := int64((n + scrapeBatch - 1) / scrapeBatch)
	per := map[time.Duration]int{}
	for i := range n {
		off := scrapeOffset(slotHash(fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250)), interval, slots)
		if off < 0 || off >= interval || off%(interval/time.Duration(slots)) != 0 {
			t.Fatalf("offset %s: want a multiple of %s below %s", off, interval/time.Duration(slots), interval)
		}
		per[off]++
	}
	if int64(len(per)) != slots {
		t.Errorf("%d endpoints on %d offsets, want %d slots used", n, len(per), slots)
	}
	for off, c := range per {
		if c > 2*scrapeBatch {
			t.Errorf("slot at %s holds %d endpoints, want about %d", off, c, scrapeBatch)
		}
	}
}
