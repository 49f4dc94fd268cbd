package scale

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func leanSample() (*pb.SyncResponse, []time.Time) {
	t0 := time.Date(2026, 11, 28, 7, 0, 0, 123456789, time.UTC)
	stamps := []time.Time{t0, t0.Add(1500 * time.Millisecond)}
	chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
	code := &pb.PoolRef{Namespace: "default", Name: "code"}
	v := &pb.ViewUpdate{
		Cursor:   &pb.ViewCursor{HubIncarnation: "hub-1", Seq: 42},
		Snapshot: true, Incomplete: true, More: true,
		Imports: []*pb.Import{
			{Pool: chat, ExportingClusters: []string{"a", "b"}, Importers: []*pb.ImportStatus{{ClusterId: "c", Imported: true}}},
			{Pool: code, ExportingClusters: []string{"a"}},
		},
		ImportsRemoved:  []*pb.PoolRef{{Namespace: "x", Name: "gone"}},
		Clusters:        []*pb.ClusterLiveness{{ClusterId: "a", Region: "eu"}},
		CapacityRemoved: []*pb.CapacityKey{{ClusterId: "a", Pool: chat}},
	}
	for _, t := range stamps {
		v.Capacity = append(v.Capacity, &pb.RemoteCapacity{ClusterId: "a", Age: durationpb.New(time.Second),
			Capacity: &pb.PoolCapacity{Pool: chat, ReadyEndpoints: 3, ObservedAt: timestamppb.New(t)}})
	}
	return &pb.SyncResponse{Msg: &pb.SyncResponse_View{View: v}}, stamps
}

// TestScanResponseReadsWhatTheSpokeUses: the lean reader finds in a hub message exactly what a
// full decode holds of the fields the simulated spoke acts on.
func TestScanResponseReadsWhatTheSpokeUses(t *testing.T) {
	m, stamps := leanSample()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	w, _, isAck, p, err := scanResponse(b, true)
	if err != nil || w != nil || isAck || p == nil {
		t.Fatalf("scan: welcome %v, ack %v, view %v, err %v", w, isAck, p, err)
	}
	v := m.GetView()
	if !proto.Equal(p.cursor, v.GetCursor()) || !p.snapshot || !p.incomplete || !p.more {
		t.Errorf("cursor %v, snapshot %v, incomplete %v, more %v; want %v and all true", p.cursor, p.snapshot, p.incomplete, p.more, v.GetCursor())
	}
	if len(p.imports) != 2 || !proto.Equal(p.imports[0], v.GetImports()[0].GetPool()) || !proto.Equal(p.imports[1], v.GetImports()[1].GetPool()) {
		t.Errorf("imports %v", p.imports)
	}
	if len(p.removed) != 1 || !proto.Equal(p.removed[0], v.GetImportsRemoved()[0]) {
		t.Errorf("removed %v", p.removed)
	}
	if !slices.EqualFunc(p.stamps, stamps, time.Time.Equal) {
		t.Errorf("stamps %v, want %v", p.stamps, stamps)
	}
	// A spoke that does not measure reads the same but the stamps.
	q, err := scanResponse2(b)
	if err != nil || len(q.stamps) != 0 || !proto.Equal(q.cursor, p.cursor) || len(q.imports) != 2 || len(q.removed) != 1 || !q.more {
		t.Errorf("without stamps: %+v, err %v", q, err)
	}

	for _, m := range []*pb.SyncResponse{
		{Msg: &pb.SyncResponse_ExportAck{ExportAck: &pb.ExportAck{Seq: 7}}},
		{Msg: &pb.SyncResponse_Welcome{Welcome: &pb.Welcome{AckedExportSeq: 3}}},
	} {
		b, _ := proto.Marshal(m)
		w, ack, isAck, p, err := scanResponse(b, true)
		switch {
		case err != nil || p != nil:
			t.Errorf("%v: view %v, err %v", m, p, err)
		case m.GetExportAck() != nil && (!isAck || ack != 7):
			t.Errorf("ack %v %d, want 7", isAck, ack)
		case m.GetWelcome() != nil && w.GetAckedExportSeq() != 3:
			t.Errorf("welcome %v", w)
		}
	}
	if _, _, _, _, err := scanResponse(b[:len(b)-3], true); err == nil {
		t.Error("a cut message was read without error")
	}
}

func scanResponse2(b []byte) (*viewPart, error) {
	_, _, _, p, err := scanResponse(b, false)
	return p, err
}

// FuzzScanResponse: whatever bytes come, the reader returns or errs; it does not panic.
func FuzzScanResponse(f *testing.F) {
	m, _ := leanSample()
	b, _ := proto.Marshal(m)
	f.Add(b)
	f.Add([]byte{0x1a, 0x02, 0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _, _, _ = scanResponse(b, true)
	})
}
