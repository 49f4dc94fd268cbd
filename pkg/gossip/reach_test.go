package gossip

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestReachFollowsTheAnswers drives reach with a ping that answers while told to: a member is
// not unreachable before its pings have run a window nor while it answers; it is once it has
// answered nothing for a window, and is not again at its next answer; a member gossip does not
// know is never pinged nor unreachable.
func TestReachFollowsTheAnswers(t *testing.T) {
	var answer atomic.Bool
	var pings, strangers atomic.Int32
	r := newReach(func(name string, _ net.Addr) error {
		if name != "a" {
			strangers.Add(1)
			return errors.New("not a member")
		}
		pings.Add(1)
		if answer.Load() {
			return nil
		}
		return errors.New("no answer")
	})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(ReachInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				r.wg.Wait()
				return
			case <-tick.C:
				r.round()
			}
		}
	}()
	defer func() { close(stop); <-done }()

	r.known("a", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	if r.unreachable("a") {
		t.Fatal("unreachable before any ping")
	}
	if r.unreachable("stranger") {
		t.Fatal("a member gossip does not know is unreachable")
	}
	// Silent from the start: unreachable a window after the first ping, not before.
	first := time.Now()
	testkit.Eventually(t, 3*time.Second, "a silent member unreachable", func() error {
		if !r.unreachable("a") {
			return errors.New("still reachable")
		}
		return nil
	})
	if waited := time.Since(first); waited < ReachWindow {
		t.Fatalf("unreachable after %v of silence: want at least %v", waited, ReachWindow)
	}
	answer.Store(true)
	testkit.Eventually(t, time.Second, "an answering member reachable again", func() error {
		if r.unreachable("a") {
			return errors.New("still unreachable")
		}
		return nil
	})
	// Answering for two windows, it stays reachable at every ask.
	for end := time.Now().Add(2 * ReachWindow); time.Now().Before(end); time.Sleep(ReachInterval / 2) {
		if r.unreachable("a") {
			t.Fatal("unreachable while it answers")
		}
	}
	answer.Store(false)
	silent := time.Now()
	testkit.Eventually(t, 3*time.Second, "a member that stopped answering unreachable", func() error {
		if !r.unreachable("a") {
			return errors.New("still reachable")
		}
		return nil
	})
	t.Logf("unreachable %v after its last answer (window %v), %d pings", time.Since(silent), ReachWindow, pings.Load())
	r.known("a", nil)
	if r.unreachable("a") {
		t.Fatal("a member gone from gossip is unreachable: Dead answers for it")
	}
	// Back in gossip (still silent): its pings start afresh, and it is not unreachable before
	// a whole window of them.
	testkit.Eventually(t, time.Second, "a round after a left gossip", func() error {
		r.mu.RLock()
		defer r.mu.RUnlock()
		if r.targets["a"].since.Load() != 0 {
			return errors.New("pings not reset yet")
		}
		return nil
	})
	back := time.Now()
	r.known("a", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2})
	testkit.Eventually(t, 3*time.Second, "a silent member back in gossip unreachable again", func() error {
		if !r.unreachable("a") {
			return errors.New("still reachable")
		}
		return nil
	})
	if waited := time.Since(back); waited < ReachWindow {
		t.Fatalf("unreachable %v after it came back: want at least %v", waited, ReachWindow)
	}
	if n := strangers.Load(); n != 0 {
		t.Fatalf("%d pings to a member gossip does not know", n)
	}
}
