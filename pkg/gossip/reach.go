package gossip

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Reachability, apart from the verdicts: a spoke asks Unreachable about the clusters it would
// spill to, and the member pings each of them directly, ReachInterval apart, with memberlist's
// own ping (encrypted, on the gossip port). One that answered none of them for ReachWindow is
// unreachable from here: no target, though not dead. The SWIM verdict is fleet-wide and must
// not be wrong, so it is slow (a suspicion lasts seconds, long enough for a member that a lossy
// link made suspect to refute it); this answer is local, quick and reversible: the next
// answered ping undoes it. At 30 % loss on each way a ping's round trip fails with probability
// 0.51, so a live member goes a whole window (20 pings in a row) unanswered about once in 20
// hours (20/s × 0.49 × 0.51^20 ≈ 1.4·10⁻⁵ runs a second); a dead one is unreachable a window
// after its last answer.
const (
	ReachInterval = 50 * time.Millisecond
	ReachWindow   = time.Second
	// reachForget stops the pings to a member nobody asked about for that long.
	reachForget = time.Minute
	// reachInflight bounds the pings awaiting an answer per member (each waits at most the
	// probe timeout).
	reachInflight = 16
)

// target is one member whose reachability was asked for. Times are monotonic nanoseconds since
// the member's epoch; zero is never.
type target struct {
	asked    atomic.Int64
	since    atomic.Int64 // first ping sent
	answered atomic.Int64 // last answer received
	inflight atomic.Int32
}

// reach pings the members asked about.
type reach struct {
	epoch time.Time
	ping  func(name string, addr net.Addr) error

	mu      sync.RWMutex
	targets map[string]*target
	addrs   map[string]net.Addr // alive or suspect members, from memberlist's events
	wg      sync.WaitGroup      // pings in flight
}

func newReach(ping func(string, net.Addr) error) *reach {
	return &reach{epoch: time.Now(), ping: ping, targets: map[string]*target{}, addrs: map[string]net.Addr{}}
}

func (r *reach) now() int64 { return int64(time.Since(r.epoch)) + 1 }

// unreachable reports whether member name, pinged since at least ReachWindow ago, answered none
// of the pings for ReachWindow; false for a member not (or no longer) known to gossip, and
// false while the pings have not run a window yet. The call keeps name pinged for reachForget.
func (r *reach) unreachable(name string) bool {
	now := r.now()
	r.mu.RLock()
	t, ok := r.targets[name]
	_, known := r.addrs[name]
	r.mu.RUnlock()
	if !ok {
		r.mu.Lock()
		if t, ok = r.targets[name]; !ok {
			t = &target{}
			t.asked.Store(now) // before round can see it, or it is forgotten at once
			r.targets[name] = t
		}
		r.mu.Unlock()
	}
	t.asked.Store(now)
	return known && t.down(now)
}

// check is unreachable without asking: it keeps no member pinged.
func (r *reach) check(name string) bool {
	r.mu.RLock()
	t, ok := r.targets[name]
	_, known := r.addrs[name]
	r.mu.RUnlock()
	return ok && known && t.down(r.now())
}

// down reports whether the target, pinged for a window, answered none of it.
func (t *target) down(now int64) bool {
	since := t.since.Load()
	return since != 0 && now-max(since, t.answered.Load()) > int64(ReachWindow)
}

// round sends one ping to every target asked about within reachForget and known to gossip,
// and forgets the others.
func (r *reach) round() {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, t := range r.targets {
		if now-t.asked.Load() > int64(reachForget) {
			delete(r.targets, name)
			continue
		}
		addr, ok := r.addrs[name]
		if !ok {
			// Gone from gossip: pings start afresh when it is back.
			t.since.Store(0)
			continue
		}
		if t.inflight.Load() >= reachInflight {
			continue
		}
		t.inflight.Add(1)
		t.since.CompareAndSwap(0, now)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer t.inflight.Add(-1)
			if r.ping(name, addr) == nil {
				at := r.now()
				for {
					old := t.answered.Load()
					if old >= at || t.answered.CompareAndSwap(old, at) {
						break
					}
				}
			}
		}()
	}
}

// known records where member name is reached (nil: it is gone).
func (r *reach) known(name string, addr net.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == nil {
		delete(r.addrs, name)
		return
	}
	r.addrs[name] = addr
}

// count is how many of the members asked about are unreachable now.
func (r *reach) count() int {
	r.mu.RLock()
	names := make([]string, 0, len(r.targets))
	for name := range r.targets {
		names = append(names, name)
	}
	r.mu.RUnlock()
	n := 0
	for _, name := range names {
		if r.check(name) {
			n++
		}
	}
	return n
}
