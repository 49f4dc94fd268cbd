package fleetpb

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestCapacityAgeCrossesClocks: a report's freshness crosses hosts as a duration. A sender whose
// clock is 10 s ahead and a receiver 10 s behind agree that a report received 300 ms before
// sending is 300 ms old (plus the time in flight), whatever the timestamps say.
func TestCapacityAgeCrossesClocks(t *testing.T) {
	truth := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	sender := truth.Add(10 * time.Second)    // the sender's clock reads 10 s ahead
	receiver := truth.Add(-10 * time.Second) // the receiver's, 10 s behind
	rc := fleet.RemoteCapacity{ClusterID: "a", Capacity: fleet.PoolCapacity{Pool: fleet.PoolRef{Namespace: "ns", Name: "p"}}, ReceivedAt: sender.Add(-300 * time.Millisecond)}

	m := RemoteCapacityAt(rc, sender)
	if got := m.GetAge().AsDuration(); got != 300*time.Millisecond {
		t.Fatalf("age on the wire = %s, want 300ms", got)
	}
	inFlight := 20 * time.Millisecond
	got := RemoteCapacityFromAt(m, receiver.Add(inFlight))
	if age := receiver.Add(inFlight).Sub(got.ReceivedAt); age != 300*time.Millisecond {
		t.Fatalf("age at the receiver = %s, want 300ms (the sender's received_at is %s off)", age, sender.Sub(receiver))
	}
	if got.ClusterID != "a" || got.Capacity.Pool != rc.Capacity.Pool {
		t.Fatalf("round trip lost the report: %+v", got)
	}
}

func TestCapacityAgeEdges(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	t.Run("no ReceivedAt, no age", func(t *testing.T) {
		if m := RemoteCapacityAt(fleet.RemoteCapacity{ClusterID: "a"}, now); m.Age != nil || m.ReceivedAt != nil {
			t.Fatalf("age %v, received_at %v: want neither", m.Age, m.ReceivedAt)
		}
	})
	t.Run("ReceivedAt after now counts as age zero", func(t *testing.T) {
		m := RemoteCapacityAt(fleet.RemoteCapacity{ClusterID: "a", ReceivedAt: now.Add(time.Second)}, now)
		if m.GetAge().AsDuration() != 0 {
			t.Fatalf("age %s, want 0", m.GetAge().AsDuration())
		}
	})
	t.Run("without age, received_at is used", func(t *testing.T) {
		at := now.Add(-time.Minute)
		got := RemoteCapacityFromAt(&pb.RemoteCapacity{ClusterId: "a", ReceivedAt: timestamppb.New(at)}, now)
		if !got.ReceivedAt.Equal(at) {
			t.Fatalf("ReceivedAt %s, want received_at %s", got.ReceivedAt, at)
		}
	})
	t.Run("age wins over received_at", func(t *testing.T) {
		got := RemoteCapacityFromAt(&pb.RemoteCapacity{ClusterId: "a", ReceivedAt: timestamppb.New(now.Add(-time.Hour)), Age: durationpb.New(time.Second)}, now)
		if !got.ReceivedAt.Equal(now.Add(-time.Second)) {
			t.Fatalf("ReceivedAt %s, want now − 1s", got.ReceivedAt)
		}
	})
	t.Run("a negative age counts as zero", func(t *testing.T) {
		got := RemoteCapacityFromAt(&pb.RemoteCapacity{ClusterId: "a", Age: durationpb.New(-time.Hour)}, now)
		if !got.ReceivedAt.Equal(now) {
			t.Fatalf("ReceivedAt %s, want now", got.ReceivedAt)
		}
	})
}
