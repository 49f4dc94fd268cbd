package server

import (
	"testing"
	"time"
)

// TestRefusedStreamsAreGivenTurns: a refused stream comes back half an opening (mean slot hold
// over the slots, halved) after the stream refused before it; never sooner than the wait, never later than
// maxRetryAfter; and the turns follow the measured slot hold.
func TestRefusedStreamsAreGivenTurns(t *testing.T) {
	a := newAdmission(4, time.Second)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	// No session opened yet: a hold of 500 ms is assumed, 125 ms an opening with 4 slots.
	// The first turn is the wait; each next one half an opening later.
	const half = 62500 * time.Microsecond
	for i := range 20 {
		if d, want := a.retryAfter(now), time.Second+time.Duration(i)*half; d != want {
			t.Errorf("refusal %d: %s, want %s", i+1, d, want)
		}
	}
	// A second later the turns given stand: the next is an opening after the last of them.
	if d, want := a.retryAfter(now.Add(time.Second)), 20*half; d != want {
		t.Errorf("a second later: %s, want %s", d, want)
	}
	// Long after, the turns have passed: the wait again.
	later := now.Add(time.Hour)
	if d := a.retryAfter(later); d != time.Second {
		t.Errorf("an hour later: %s, want the 1s wait", d)
	}

	// Sessions that hold their slot 2 s: the hold moves towards it, and so do the steps.
	for range 64 {
		a.held(2 * time.Second)
	}
	if a.hold < 1990*time.Millisecond || a.hold > 2*time.Second {
		t.Fatalf("hold after 64 sessions of 2s = %s", a.hold)
	}
	first := a.retryAfter(later)
	second := a.retryAfter(later)
	if step := second - first; step < 245*time.Millisecond || step > 250*time.Millisecond {
		t.Errorf("turns %s then %s: %s apart, want half an opening (hold/8, about 250ms)", first, second, step)
	}

	// A backlog beyond maxRetryAfter: every later turn is maxRetryAfter away.
	for range 400 {
		a.retryAfter(later)
	}
	if d := a.retryAfter(later); d != maxRetryAfter {
		t.Errorf("after 400 more refusals: %s, want %s", d, maxRetryAfter)
	}
}
