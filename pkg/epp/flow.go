package epp

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Flow control (GIE's idea, docs/epp.md "Flow control"): while a pool is saturated, the EPP
// holds requests below a priority itself instead of adding them to the model servers' FIFO
// queues, and releases them, highest priority first, one for each request of the pool that
// ends. A Critical request then waits behind what the servers already hold, not behind every
// Standard request that came before it. The queue is bounded and a held request waits at most
// a timeout; either way it is then routed as without flow control (never refused: it is not
// sheddable, or it would have been shed).

// holdResult is how a hold ended.
type holdResult int

const (
	holdReleased holdResult = iota // a request of the pool ended and this one took its place
	holdTimedOut                   // waited FlowControl.Timeout
	holdFull                       // the queue was full: not held
	holdGone                       // the client went away
)

func (r holdResult) String() string {
	switch r {
	case holdReleased:
		return "released"
	case holdTimedOut:
		return "timed_out"
	case holdFull:
		return "queue_full"
	}
	return "client_gone"
}

// holdQueue is one pool's held requests, and its requests in flight at its endpoints.
type holdQueue struct {
	max int

	mu      sync.Mutex
	seq     uint64
	waiters []*holder // best first: higher priority, then earlier
}

type holder struct {
	priority int
	seq      uint64
	ready    chan struct{}
}

func newHoldQueue(max int) *holdQueue { return &holdQueue{max: max} }

// holdRecheck is how often a held request looks whether its pool is still saturated: requests
// that other EPP replicas routed end unseen here.
const holdRecheck = 100 * time.Millisecond

// hold parks the caller until a request of the pool ends, the pool is no longer saturated
// (asked every holdRecheck by the first held request only, so that a thousand held requests
// cost one look at the pool, not a thousand), timeout passes or ctx ends.
func (q *holdQueue) hold(ctx context.Context, priority int, timeout time.Duration, saturated func() bool) holdResult {
	q.mu.Lock()
	if len(q.waiters) >= q.max {
		q.mu.Unlock()
		return holdFull
	}
	q.seq++
	h := &holder{priority: priority, seq: q.seq, ready: make(chan struct{})}
	i, _ := slices.BinarySearchFunc(q.waiters, h, func(a, b *holder) int {
		if a.priority != b.priority {
			return b.priority - a.priority
		}
		return int(a.seq - b.seq)
	})
	q.waiters = slices.Insert(q.waiters, i, h)
	q.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	recheck := time.NewTicker(holdRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-h.ready:
			return holdReleased
		case <-recheck.C:
			if !q.first(h) || saturated() {
				continue
			}
			if q.remove(h) {
				return holdReleased
			}
			return holdReleased // released meanwhile
		case <-t.C:
			if q.remove(h) {
				return holdTimedOut
			}
			return holdReleased // released as the timer fired
		case <-ctx.Done():
			if q.remove(h) {
				return holdGone
			}
			// Released as the client left: pass the place on.
			q.release()
			return holdGone
		}
	}
}

// first reports whether h is the next to go.
func (q *holdQueue) first(h *holder) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters) > 0 && q.waiters[0] == h
}

// remove takes h out of the queue; false when it was released already.
func (q *holdQueue) remove(h *holder) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.waiters, h)
	if i < 0 {
		return false
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	return true
}

// release lets the best held request go, when there is one: a request of the pool ended.
func (q *holdQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) == 0 {
		return
	}
	h := q.waiters[0]
	q.waiters = q.waiters[1:]
	close(h.ready)
}

// held is the number of requests held.
func (q *holdQueue) held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters)
}
