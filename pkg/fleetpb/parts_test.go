package fleetpb_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func bigView(n int) *pb.ViewUpdate {
	u := &pb.ViewUpdate{Cursor: &pb.ViewCursor{HubIncarnation: "abc", Seq: 7}, Snapshot: true, Incomplete: true}
	for i := range n {
		p := &pb.PoolRef{Namespace: "ns", Name: fmt.Sprintf("pool-%06d-%s", i, strings.Repeat("x", 100))}
		u.Imports = append(u.Imports, &pb.Import{Pool: p, ExportingClusters: []string{"a", "b"}})
		u.Capacity = append(u.Capacity, &pb.RemoteCapacity{ClusterId: "a", Capacity: &pb.PoolCapacity{Pool: p, QueueDepth: uint32(i)}})
		u.CapacityRemoved = append(u.CapacityRemoved, &pb.CapacityKey{ClusterId: "b", Pool: p})
		u.ClustersRemoved = append(u.ClustersRemoved, fmt.Sprintf("cluster-%06d", i))
	}
	u.Clusters = []*pb.ClusterLiveness{{ClusterId: "a"}, {ClusterId: "b"}}
	u.ImportsRemoved = []*pb.PoolRef{{Namespace: "ns", Name: "gone"}}
	return u
}

// merge joins parts as a receiver does, checking that every part but the last is marked more.
func merge[M proto.Message](t *testing.T, parts []M, more func(M) bool, clear func(M)) M {
	t.Helper()
	whole := proto.Clone(parts[0]).(M)
	for i, p := range parts {
		if got, want := more(p), i < len(parts)-1; got != want {
			t.Fatalf("part %d of %d: more %v, want %v", i+1, len(parts), got, want)
		}
		if i > 0 {
			proto.Merge(whole, p)
		}
	}
	clear(whole)
	return whole
}

// TestSplitViewKeepsEverythingWithinTheLimit: the parts of a view update stay within the limit
// (give or take one entry), each carries the update's cursor and marks, and merged they are the
// update.
func TestSplitViewKeepsEverythingWithinTheLimit(t *testing.T) {
	u := bigView(5000)
	const limit = 64 << 10
	parts := fleetpb.SplitView(u, limit)
	if len(parts) < proto.Size(u)/limit {
		t.Fatalf("%d parts for %d bytes at %d per part", len(parts), proto.Size(u), limit)
	}
	for i, p := range parts {
		if n := proto.Size(p); n > limit+1024 {
			t.Errorf("part %d: %d bytes, limit %d", i, n, limit)
		}
		if !proto.Equal(p.GetCursor(), u.GetCursor()) || !p.GetSnapshot() || !p.GetIncomplete() {
			t.Errorf("part %d: cursor %v snapshot %v incomplete %v, want the update's", i, p.GetCursor(), p.GetSnapshot(), p.GetIncomplete())
		}
	}
	whole := merge(t, parts, (*pb.ViewUpdate).GetMore, func(v *pb.ViewUpdate) { v.More = false })
	if !proto.Equal(whole, u) {
		t.Fatal("the merged parts differ from the update")
	}
	if small := bigView(3); len(fleetpb.SplitView(small, limit)) != 1 || fleetpb.SplitView(small, limit)[0] != small {
		t.Fatal("an update that fits was cut")
	}
}

// TestSplitExportsCapsEntriesPerPart: a delta's parts hold at most 1,000 entries each (the
// protocol's cap per message), carry its seq and replace_all, and merged are the delta.
func TestSplitExportsCapsEntriesPerPart(t *testing.T) {
	d := &pb.ExportDelta{Seq: 9, ReplaceAll: true}
	for i := range 2500 {
		d.Upserts = append(d.Upserts, &pb.Export{Pool: &pb.PoolRef{Namespace: "ns", Name: fmt.Sprintf("p%d", i)}, TargetPorts: []uint32{8000}})
	}
	parts := fleetpb.SplitExports(d, fleetpb.SpokePartBytes)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3 (2,500 small upserts, 1,000 per part)", len(parts))
	}
	for i, p := range parts {
		if p.GetSeq() != 9 || !p.GetReplaceAll() || len(p.GetUpserts())+len(p.GetRemoves()) > fleetpb.MaxPartEntries {
			t.Errorf("part %d: seq %d replace_all %v, %d entries", i, p.GetSeq(), p.GetReplaceAll(), len(p.GetUpserts()))
		}
	}
	whole := merge(t, parts, (*pb.ExportDelta).GetMore, func(v *pb.ExportDelta) { v.More = false })
	if !proto.Equal(whole, d) {
		t.Fatal("the merged parts differ from the delta")
	}
	// Large labels: the size, not the count, cuts.
	big := &pb.ExportDelta{Seq: 1, ReplaceAll: true}
	for i := range 100 {
		labels := map[string]string{}
		for j := range 64 {
			labels[fmt.Sprintf("k%02d-%s", j, strings.Repeat("k", 200))] = strings.Repeat("v", 63)
		}
		big.Upserts = append(big.Upserts, &pb.Export{Pool: &pb.PoolRef{Namespace: "ns", Name: fmt.Sprintf("p%d", i)}, TargetPorts: []uint32{1}, Labels: labels})
	}
	for i, p := range fleetpb.SplitExports(big, fleetpb.SpokePartBytes) {
		if n := proto.Size(p); n > 1<<20 {
			t.Errorf("part %d: %d bytes, over the hub's 1 MiB", i, n)
		}
	}
}

// TestSplitReportsAndInterest: capacity reports, import reports and interests cut and merge
// the same way.
func TestSplitReportsAndInterest(t *testing.T) {
	r := &pb.CapacityReport{}
	ir := &pb.ImportReport{}
	in := &pb.Interest{}
	for i := range 3000 {
		p := &pb.PoolRef{Namespace: "ns", Name: fmt.Sprintf("pool-%d-%s", i, strings.Repeat("y", 200))}
		c := &pb.PoolCapacity{Pool: p}
		for j := range 20 {
			c.Endpoints = append(c.Endpoints, &pb.EndpointCapacity{Address: fmt.Sprintf("10.0.%d.%d:8000", i%250, j), Ready: true})
		}
		r.Pools = append(r.Pools, c)
		ir.Pools = append(ir.Pools, &pb.PoolImportStatus{Pool: p, Reason: "NamespaceNotFound", Message: strings.Repeat("m", 300)})
		in.CapacityInterest = append(in.CapacityInterest, p)
	}
	const limit = fleetpb.SpokePartBytes
	rp := fleetpb.SplitCapacity(r, limit)
	irp := fleetpb.SplitImportReport(ir, limit)
	inp := fleetpb.SplitInterest(in, limit)
	if len(rp) < 2 || len(irp) < 2 || len(inp) < 2 {
		t.Fatalf("parts: capacity %d, imports %d, interest %d; want each cut", len(rp), len(irp), len(inp))
	}
	for _, n := range []int{maxSize(rp), maxSize(irp), maxSize(inp)} {
		if n > limit+4096 {
			t.Errorf("a part of %d bytes, limit %d", n, limit)
		}
	}
	if !proto.Equal(merge(t, rp, (*pb.CapacityReport).GetMore, func(v *pb.CapacityReport) { v.More = false }), r) ||
		!proto.Equal(merge(t, irp, (*pb.ImportReport).GetMore, func(v *pb.ImportReport) { v.More = false }), ir) ||
		!proto.Equal(merge(t, inp, (*pb.Interest).GetMore, func(v *pb.Interest) { v.More = false }), in) {
		t.Fatal("merged parts differ from the message")
	}
}

func maxSize[M proto.Message](ms []M) int {
	n := 0
	for _, m := range ms {
		n = max(n, proto.Size(m))
	}
	return n
}
