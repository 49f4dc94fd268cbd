package epp

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func always() bool { return true }

// TestHoldQueueReleasesByPriority: held requests go highest priority first, then in order of
// arrival; a full queue holds nothing; a hold ends at its timeout, when the pool is no longer
// saturated, or when the client goes.
func TestHoldQueueReleasesByPriority(t *testing.T) {
	q := newHoldQueue(3)
	order := make(chan int, 3)
	for i, p := range []int{0, -5, 50} {
		go func() {
			if r := q.hold(context.Background(), p, time.Minute, always); r != holdReleased {
				t.Errorf("hold of priority %d ended %s", p, r)
			}
			order <- p
		}()
		testkit.Eventually(t, 5*time.Second, "held", testkit.True(func() bool { return q.held() == i+1 }))
	}
	if r := q.hold(context.Background(), 100, time.Minute, always); r != holdFull {
		t.Fatalf("a fourth hold in a queue of three ended %s, want %s", r, holdFull)
	}
	for _, want := range []int{50, 0, -5} {
		q.release()
		if got := <-order; got != want {
			t.Fatalf("released priority %d, want %d", got, want)
		}
	}
	q.release() // nothing held: nothing happens

	if r := q.hold(context.Background(), 0, 50*time.Millisecond, always); r != holdTimedOut {
		t.Fatalf("hold ended %s, want %s", r, holdTimedOut)
	}
	if r := q.hold(context.Background(), 0, time.Minute, func() bool { return false }); r != holdReleased {
		t.Fatalf("hold in a pool no longer saturated ended %s, want %s", r, holdReleased)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := q.hold(ctx, 0, time.Minute, always); r != holdGone {
		t.Fatalf("hold of a client gone ended %s, want %s", r, holdGone)
	}
	if n := q.held(); n != 0 {
		t.Fatalf("%d still held", n)
	}
}

// TestFlowControlHoldsBelowCritical: with flow control on and the pool saturated, a Standard
// request waits until one of the pool's requests ends; a Critical one is not held; with the
// pool not saturated nothing is held.
func TestFlowControlHoldsBelowCritical(t *testing.T) {
	s := newTestServer(t, stageObjectives+"flowControl: {enabled: true}\n",
		fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 9})}})
	mk := func(objective string, waiting int) *exchange {
		x := &exchange{headers: map[string]string{}, ctx: context.Background(),
			req: request.Request{Model: "m", Prompt: "x"}, target: "m"}
		x.cands = []scheduler.Endpoint{{Address: "10.0.0.1:8000", Metrics: modelmetrics.Metrics{WaitingQueue: waiting}, ScrapedAt: time.Now()}}
		x.objective, x.priority = s.resolveObjective(objective)
		return x
	}
	if held, _ := s.hold(mk("critical", 9)); held {
		t.Fatal("a Critical request held")
	}
	if held, _ := s.hold(mk("standard", 0)); held {
		t.Fatal("a request held in a pool that is not full")
	}
	done := make(chan bool, 1)
	go func() {
		held, out := s.hold(mk("standard", 9))
		done <- held && out == nil
	}()
	testkit.Eventually(t, 5*time.Second, "the Standard request held", testkit.True(func() bool { return s.flow.held() == 1 }))
	select {
	case <-done:
		t.Fatal("released before any request ended")
	case <-time.After(3 * holdRecheck):
	}
	s.ended(&exchange{local: s.flow}) // a request the pool served ends
	if !<-done {
		t.Fatal("hold() = false for a held request")
	}
	if got := testutil.ToFloat64(s.metrics.holds.WithLabelValues("released")); got != 1 {
		t.Fatalf("holds released counted %v, want 1", got)
	}
}

// TestFlowControlQueueDepth: flow control's own queue depth holds before the saturation
// detector trips; a sheddable request whose hold times out is shed with 429.
func TestFlowControlQueueDepth(t *testing.T) {
	s := newTestServer(t, stageObjectives+"flowControl: {enabled: true, queueDepth: 1, timeout: 100ms}\n",
		fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 1})}})
	x := &exchange{headers: map[string]string{}, ctx: context.Background(), req: request.Request{Model: "m", Prompt: "x"}, target: "m"}
	x.cands = []scheduler.Endpoint{{Address: "10.0.0.1:8000", Metrics: modelmetrics.Metrics{WaitingQueue: 1}, ScrapedAt: time.Now()}}
	if s.saturated(x.cands) {
		t.Fatal("one waiting request saturates the pool: the test needs it not to")
	}
	x.objective, x.priority = s.resolveObjective("batch")
	held, out := s.hold(x)
	if !held || immediateStatus(out) != 429 {
		t.Fatalf("a BestEffort request held %v, answer %d; want held, then shed with 429", held, immediateStatus(out))
	}
	if got := testutil.ToFloat64(s.metrics.holds.WithLabelValues("timed_out")); got != 1 {
		t.Fatalf("holds timed out counted %v, want 1", got)
	}
}
