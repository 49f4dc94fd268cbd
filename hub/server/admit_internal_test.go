package server

import (
	"testing"
	"time"
)

// TestRefusedStreamsAreGivenTurns: a refused stream comes back after the streams waiting and the
// streams refused before it, one opening (mean slot hold over the slots) apart; never sooner than
// the wait, never later than maxRetryAfter; and the turns follow the measured slot hold.
func TestRefusedStreamsAreGivenTurns(t *testing.T) {
	a := newAdmission(4, time.Second)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	// No session opened yet: a hold of 500 ms is assumed, 125 ms an opening with 4 slots.
	// The first turn is below the wait: the wait it is, and the next comes one opening later.
	if d := a.retryAfter(now); d != time.Second {
		t.Errorf("first refusal: %s, want the 1s wait", d)
	}
	if d := a.retryAfter(now); d != time.Second+125*time.Millisecond {
		t.Errorf("second refusal: %s, want 1.125s", d)
	}
	// 20 streams waiting: the next refused comes after them (21 × 125 ms), the one after
	// that one opening later.
	a.setWaiting(20)
	if d := a.retryAfter(now); d != 21*125*time.Millisecond {
		t.Errorf("with 20 waiting: %s, want %s", d, 21*125*time.Millisecond)
	}
	if d := a.retryAfter(now); d != 22*125*time.Millisecond {
		t.Errorf("the next: %s, want %s", d, 22*125*time.Millisecond)
	}
	// A second later, the waiting ones opened: the turns given stand, one opening apart.
	a.setWaiting(-20)
	if d := a.retryAfter(now.Add(time.Second)); d != 23*125*time.Millisecond-time.Second {
		t.Errorf("a second later: %s, want %s", d, 23*125*time.Millisecond-time.Second)
	}

	// Sessions that hold their slot 2 s: the hold moves towards it, and so do the steps.
	for range 64 {
		a.held(2 * time.Second)
	}
	if a.hold < 1990*time.Millisecond || a.hold > 2*time.Second {
		t.Fatalf("hold after 64 sessions of 2s = %s", a.hold)
	}
	later := now.Add(time.Hour) // the turns given before have passed
	first := a.retryAfter(later)
	second := a.retryAfter(later)
	if step := second - first; step < 495*time.Millisecond || step > 500*time.Millisecond {
		t.Errorf("turns %s then %s: %s apart, want one opening (hold/4, about 500ms)", first, second, step)
	}

	// A backlog beyond maxRetryAfter: every later turn is maxRetryAfter away.
	a.setWaiting(1000)
	for range 3 {
		if d := a.retryAfter(later); d != maxRetryAfter {
			t.Errorf("with 1,000 waiting: %s, want %s", d, maxRetryAfter)
		}
	}
}
