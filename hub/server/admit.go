package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Defaults of the session admission (Limits.MaxSessionOpens, Limits.SessionOpenWait).
const (
	DefaultMaxSessionOpens = 32
	DefaultSessionOpenWait = 3 * time.Second
)

// admission bounds the sessions a replica opens at once: from the Hello to the first view
// update, a session reads and writes the registry (its session record, its lease, its cluster's
// last-seen) and takes a snapshot of the view. A thousand spokes that reconnect together (a
// restarted hub) would otherwise put thousands of etcd requests and snapshots in flight at
// once; with it, they come through a few dozen at a time, at the pace etcd answers, and the
// others wait their turn on their open stream (cheaper than a refusal: each attempt costs the
// spoke a new connection and its TLS handshake). A stream that finds no slot within the wait
// (3 s: the spoke gives a replica 10 s to welcome it) is refused with Unavailable and a
// RetryInfo: its spoke comes back after that delay, jittered, or tries another replica first.
// Register takes a slot only when it writes: for a cluster the view does not hold as it is.
//
// The delay grows with the backlog (retryAfter), so that a fleet larger than a replica opens in
// one wait comes back spread over the time the replica needs to open it, each spoke refused
// about once, instead of every refused spoke coming back every few seconds with a new TLS
// handshake and Hello (at 3,000 spokes on two cores those took a third of the hub's CPU).
type admission struct {
	slots *semaphore.Weighted
	limit int
	wait  time.Duration

	mu sync.Mutex
	// hold is the mean time a session holds its slot (a moving average): the replica opens
	// limit/hold sessions a second.
	hold time.Duration
	// horizon is the turn given to the last stream refused: the next one's comes after it.
	horizon time.Time
}

// Bounds of the delay a refused stream is given (admission.retryAfter), and the slot hold
// assumed before the first session opened.
const (
	maxRetryAfter = 60 * time.Second
	initialHold   = 500 * time.Millisecond
)

func newAdmission(limit int, wait time.Duration) *admission {
	return &admission{slots: semaphore.NewWeighted(int64(limit)), limit: limit, wait: wait, hold: initialHold}
}

// retryAfter gives a stream refused at now its turn: half an opening (hold/limit/2) after the
// turn given to the stream refused before it, and no sooner than the admission's wait (the
// streams waiting now take the slots that free meanwhile, or are refused and given turns too);
// at most maxRetryAfter. The refused come back at twice the rate the replica opens sessions: one
// early for its slot waits on its stream, which costs little, where one late would leave a slot
// idle.
func (a *admission) retryAfter(now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	turn := a.horizon.Add(a.hold / time.Duration(2*a.limit))
	if first := now.Add(a.wait); turn.Before(first) {
		turn = first
	}
	if last := now.Add(maxRetryAfter); turn.After(last) {
		turn = last
	}
	a.horizon = turn
	return turn.Sub(now)
}

// held records that a session held its slot for d.
func (a *admission) held(d time.Duration) {
	a.mu.Lock()
	a.hold += (d - a.hold) / 8
	a.mu.Unlock()
}

// busyError refuses a session open for lack of a slot: Unavailable with a RetryInfo of
// retryAfter.
type busyError struct{ retryAfter time.Duration }

func (e *busyError) Error() string {
	return fmt.Sprintf("the hub replica is opening as many sessions as it allows at once: retry in %s", e.retryAfter)
}

// GRPCStatus makes toStatus pass the status with its RetryInfo through.
func (e *busyError) GRPCStatus() *status.Status {
	st := status.New(codes.Unavailable, e.Error())
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.retryAfter)}); err == nil {
		return d
	}
	return st
}

// admit waits for a slot to open a session for the admission's wait at most; release gives it
// back (once, whatever the number of calls), and slotHold does if release has not.
func (s *Server) admit(ctx context.Context) (release func(), err error) {
	a := s.admission
	s.metrics.opensWaiting.Inc()
	wctx, cancel := context.WithTimeout(ctx, a.wait)
	err = a.slots.Acquire(wctx, 1)
	cancel()
	s.metrics.opensWaiting.Dec()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		s.metrics.limited.WithLabelValues(limitSessionOpens).Inc()
		return nil, &busyError{retryAfter: a.retryAfter(time.Now())}
	}
	s.metrics.opening.Inc()
	admitted := time.Now()
	give := sync.OnceFunc(func() {
		held := time.Since(admitted)
		a.held(held)
		s.metrics.openSeconds.Observe(held.Seconds())
		s.metrics.opening.Dec()
		a.slots.Release(1)
	})
	// A stream held up by its own spoke (the rest of its interest not sent) gives the slot back
	// after slotHold, so that no spoke keeps the others out.
	hold := time.AfterFunc(slotHold, give)
	return func() {
		hold.Stop()
		give()
	}, nil
}

// slotHold is the longest a stream holds an admission slot.
const slotHold = 10 * time.Second
