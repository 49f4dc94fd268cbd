package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/testkit"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestObserverSession: an observer of a cluster gets the Welcome (acked 0), the hop keys and
// the fleet view, opens no session in the registry and takes over nothing: the cluster's real
// session goes on. Whatever it sends ends its stream with FailedPrecondition, and changes
// nothing.
func TestObserverSession(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "10.0.0.1:443")
	live := openSession(t, ctx, h.SyncAs("a"), "a")
	rec, ok, err := h.Store.GetSession(ctx, "a")
	if err != nil || !ok {
		t.Fatalf("the real session's record: %v %v", ok, err)
	}

	for _, msg := range []*pb.SyncRequest{capacityReport(3), exportChat(1), hello("a")} {
		obs, err := h.SyncAs("a").Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := obs.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: "a", SpokeIncarnation: "observer-1", Observer: true}}}); err != nil {
			t.Fatal(err)
		}
		var welcome *pb.Welcome
		var keys, view bool
		for welcome == nil || !keys || !view {
			resp, err := obs.Recv()
			if err != nil {
				t.Fatalf("observer stream: %v", err)
			}
			switch {
			case resp.GetWelcome() != nil:
				welcome = resp.GetWelcome()
			case resp.GetHopKeys() != nil:
				keys = len(resp.GetHopKeys().GetKeys()) > 0
			case resp.GetView() != nil:
				view = len(resp.GetView().GetImports()) == 1
			}
		}
		if welcome.GetAckedExportSeq() != 0 || welcome.GetClusterId() != "a" {
			t.Fatalf("observer Welcome %v: want acked 0 for cluster a", welcome)
		}
		// The registry's session is still the real one's.
		if cur, ok, err := h.Store.GetSession(ctx, "a"); err != nil || !ok || cur != rec {
			t.Fatalf("the session record changed under an observer: %+v (was %+v), %v", cur, rec, err)
		}
		if err := obs.Send(msg); err != nil {
			t.Fatal(err)
		}
		if err := ended(t, obs); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("observer sending %T: %v, want FailedPrecondition", msg.GetMsg(), err)
		}
	}
	if got := h.capacityOf("a"); len(got) != 0 {
		t.Fatalf("an observer's capacity report reached the view: %+v", got)
	}
	// The real session lives on: its reports still reach the view.
	if err := live.Send(capacityReport(5)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the real session's report in the view", func() error {
		if got := h.capacityOf("a"); len(got) != 1 || got[0].QueueDepth != 5 {
			return fmt.Errorf("capacity %+v", got)
		}
		return nil
	})
}
