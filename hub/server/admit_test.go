package server_test

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/hub/server"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestSessionOpensWaitForASlot: with one session open at a time, a session holds its slot from
// its Hello to its first view update. While cluster a's stream waits for the rest of its
// interest (no view yet), b's Hello waits the 300 ms the hub allows and is refused with
// Unavailable and a RetryInfo of its turn, counted under limit session_opens; once a's interest
// came and its first view went out, b's next attempt is welcomed.
func TestSessionOpensWaitForASlot(t *testing.T) {
	ctx := t.Context()
	const wait = 300 * time.Millisecond
	h := startHub(t, hubOptions{hub: hubtest.Options{Limits: server.Limits{MaxSessionOpens: 1, SessionOpenWait: wait}}})
	h.register(t, ctx, "a", "10.0.0.1:443")
	h.register(t, ctx, "b", "10.0.0.2:443")

	a, err := h.SyncAs("a").Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: "a", SpokeIncarnation: "inc-1",
		CapacityInterest: []*pb.PoolRef{chat}, InterestFollows: true}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := a.Recv(); err != nil || resp.GetWelcome() == nil {
		t.Fatalf("a's first answer: %v, %v; want a welcome", resp, err)
	}

	b, err := h.SyncAs("b").Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send(hello("b")); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = ended(t, b)
	if waited := time.Since(began); waited < wait {
		t.Errorf("b was refused after %s, want after the %s wait", waited, wait)
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("b's stream ended with %v, want Unavailable", err)
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	// No stream was refused before b: its turn is the wait.
	if delay != wait {
		t.Errorf("b's RetryInfo delay = %s, want %s (details %v)", delay, wait, st.Details())
	}
	if n := promtest.Value(t, h.Registry, "spillway_hub_limit_exceeded_total", "session_opens"); n != 1 {
		t.Errorf("session_opens refusals = %v, want 1", n)
	}

	// a's interest completes: its first view goes out and the slot with it.
	if err := a.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: &pb.Interest{CapacityInterest: []*pb.PoolRef{{Namespace: "default", Name: "other"}}}}}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := a.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetView() != nil {
			break
		}
	}
	b2, err := h.SyncAs("b").Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Send(hello("b")); err != nil {
		t.Fatal(err)
	}
	if resp, err := b2.Recv(); err != nil || resp.GetWelcome() == nil {
		t.Fatalf("b's second attempt: %v, %v; want a welcome", resp, err)
	}
	if n := promtest.Value(t, h.Registry, "spillway_hub_limit_exceeded_total", "session_opens"); n != 1 {
		t.Errorf("session_opens refusals after b's second attempt = %v, want still 1", n)
	}
}
