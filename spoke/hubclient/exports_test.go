package hubclient

import (
	"testing"

	"github.com/spillway-io/spillway/pkg/fleet"
)

func exp(name string, port uint32) fleet.Export {
	return fleet.Export{Pool: fleet.PoolRef{Namespace: "default", Name: name}, TargetPorts: []uint32{port}}
}

func TestExportLogResume(t *testing.T) {
	l := newExportLog()
	// The first session knows nothing: one replace_all with everything.
	l.set([]fleet.Export{exp("a", 1)})
	first := l.since(0)
	if len(first) != 1 || !first[0].GetReplaceAll() || len(first[0].GetUpserts()) != 1 {
		t.Fatalf("first session: %v", first)
	}
	acked := first[0].GetSeq()

	// Unchanged sets record nothing; changes are deltas with the next numbers.
	l.set([]fleet.Export{exp("a", 1)})
	if got := l.after(acked); len(got) != 0 {
		t.Fatalf("unchanged set produced %v", got)
	}
	l.set([]fleet.Export{exp("a", 2), exp("b", 1)})
	l.set([]fleet.Export{exp("b", 1)})
	got := l.since(acked)
	if len(got) != 2 || got[0].GetSeq() != acked+1 || len(got[0].GetUpserts()) != 2 || len(got[1].GetRemoves()) != 1 {
		t.Fatalf("resume after %d: %v", acked, got)
	}
	if got := l.since(l.seq); got != nil {
		t.Fatalf("hub has everything, yet %v", got)
	}

	// A position the log no longer reaches resumes with replace_all.
	for i := range maxExportLog + 10 {
		l.set([]fleet.Export{exp("b", uint32(i+10))})
	}
	old := l.since(acked)
	if len(old) != 1 || !old[0].GetReplaceAll() || old[0].GetUpserts()[0].GetPool().GetName() != "b" {
		t.Fatalf("resume from outside the log: %v", old)
	}
	// A hub that lost the lease (acked 0) gets replace_all numbered after everything sent.
	before := l.seq
	again := l.since(0)
	if len(again) != 1 || !again[0].GetReplaceAll() || again[0].GetSeq() <= before {
		t.Fatalf("after a lapsed lease: %v", again)
	}
}
