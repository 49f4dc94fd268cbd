package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

func refs(prefix string, n int) []fleet.PoolRef {
	out := make([]fleet.PoolRef, n)
	for i := range out {
		out[i] = fleet.PoolRef{Namespace: "ns", Name: fmt.Sprintf("%s%d", prefix, i)}
	}
	return out
}

// TestAssemblerJoinsExportParts: a delta's parts are stored together with the last, and a part
// of another delta in the middle, or more upserts than the cap across the parts, is refused.
func TestAssemblerJoinsExportParts(t *testing.T) {
	a := newAssembler(1500)
	part := func(seq uint64, replace bool, n int, prefix string) registry.ExportDelta {
		d := registry.ExportDelta{Seq: seq, ReplaceAll: replace}
		for _, p := range refs(prefix, n) {
			d.Upserts = append(d.Upserts, fleet.Export{Pool: p})
		}
		return d
	}
	if _, done, err := a.exportPart(part(3, true, 1000, "a"), 1, true); done || err != nil {
		t.Fatalf("first part: done %v err %v, want neither", done, err)
	}
	whole, done, err := a.exportPart(part(3, true, 400, "b"), 1, false)
	if !done || err != nil || whole.Seq != 3 || !whole.ReplaceAll || len(whole.Upserts) != 1400 {
		t.Fatalf("last part: done %v err %v, seq %d replace_all %v, %d upserts; want delta 3 with 1,400", done, err, whole.Seq, whole.ReplaceAll, len(whole.Upserts))
	}
	// The next delta starts afresh.
	if whole, done, err := a.exportPart(part(4, false, 1, "c"), 1, false); !done || err != nil || len(whole.Upserts) != 1 {
		t.Fatalf("a one-message delta: done %v err %v, %d upserts", done, err, len(whole.Upserts))
	}
	if _, _, err := a.exportPart(part(5, true, 10, "d"), 1, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.exportPart(part(6, true, 10, "e"), 1, false); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a part of delta 6 amid delta 5's: %v, want invalid argument", err)
	}
	b := newAssembler(1500)
	if _, _, err := b.exportPart(part(1, true, 1000, "a"), 1, true); err != nil {
		t.Fatal(err)
	}
	var tm *tooManyError
	if _, _, err := b.exportPart(part(1, true, 600, "b"), 1, true); !errors.As(err, &tm) {
		t.Fatalf("1,600 upserts across parts with a cap of 1,500: %v, want too many", err)
	}
	// A pool twice across the parts (etcd would refuse two writes of one key in a transaction).
	c := newAssembler(0)
	if _, _, err := c.exportPart(part(1, true, 10, "a"), 1, true); err != nil {
		t.Fatal(err)
	}
	again := part(1, true, 0, "")
	again.Removes = []fleet.PoolRef{{Namespace: "ns", Name: "a3"}}
	if _, _, err := c.exportPart(again, 1, false); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a3 upserted then removed across parts: %v, want invalid argument", err)
	}
	// Bounded in bytes, and no empty part that continues.
	d := newAssembler(0)
	if _, _, err := d.exportPart(part(1, true, 1, "a"), maxDeltaBytes, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.exportPart(part(1, true, 1, "b"), 1, true); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("past %d bytes across parts: %v, want invalid argument", maxDeltaBytes, err)
	}
	if _, _, err := newAssembler(0).exportPart(part(1, true, 0, ""), 0, true); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("an empty part that continues: %v, want invalid argument", err)
	}
	for name, err := range map[string]error{
		"capacity": func() error { _, err := newAssembler(0).capacityPart(nil, nil, true); return err }(),
		"imports":  func() error { _, _, err := newAssembler(0).importPart(nil, true); return err }(),
		"interest": func() error { _, _, err := newAssembler(0).interestPart(nil, true); return err }(),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("an empty %s part that continues: %v, want invalid argument", name, err)
		}
	}
}

// TestAssemblerCountsACapacityReportOnce: only a report's first part counts against the rate,
// and a pool twice in the parts of one report is refused.
func TestAssemblerCountsACapacityReportOnce(t *testing.T) {
	a := newAssembler(0)
	ps := refs("p", 30)
	for i, c := range []struct {
		pools []fleet.PoolRef
		more  bool
		first bool
	}{
		{ps[:1], false, true}, // one message
		{ps[:10], true, true}, // a report of three parts
		{ps[10:20], true, false},
		{ps[20:], false, false},
		{ps[:5], false, true}, // the next report
	} {
		first, err := a.capacityPart(c.pools, nil, c.more)
		if err != nil || first != c.first {
			t.Fatalf("message %d: first %v err %v, want first %v", i, first, err, c.first)
		}
	}
	if _, err := a.capacityPart(ps[:10], nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.capacityPart(nil, ps[9:10], false); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("pool 9 reported and removed in one report: %v, want invalid argument", err)
	}
}

// TestAssemblerJoinsImportsAndInterest: import reports and interests apply whole, bounded
// across their parts.
func TestAssemblerJoinsImportsAndInterest(t *testing.T) {
	a := newAssembler(0)
	if _, done, _ := a.interestPart(refs("a", 6000), true); done {
		t.Fatal("done before the last part")
	}
	whole, done, err := a.interestPart(refs("b", 3000), false)
	if !done || err != nil || len(whole) != 9000 {
		t.Fatalf("done %v err %v, %d pools; want 9,000", done, err, len(whole))
	}
	if _, _, err := a.interestPart(refs("c", 6000), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.interestPart(refs("d", 6000), false); err == nil {
		t.Fatal("12,000 pools of interest across parts accepted, want at most 10,000")
	}
	states := func(n int) []fleet.PoolImportStatus {
		out := make([]fleet.PoolImportStatus, n)
		for i, p := range refs("s", n) {
			out[i] = fleet.PoolImportStatus{Pool: p, Imported: true}
		}
		return out
	}
	b := newAssembler(0)
	if _, done, _ := b.importPart(states(2), true); done {
		t.Fatal("done before the last part")
	}
	if whole, done, err := b.importPart(nil, false); !done || err != nil || len(whole) != 2 {
		t.Fatalf("done %v err %v, %d states; want the 2 of the first part (an empty last part ends it)", done, err, len(whole))
	}
	if _, _, err := b.importPart(states(maxInterest+1), false); err == nil {
		t.Fatal("10,001 import states accepted")
	}
}
