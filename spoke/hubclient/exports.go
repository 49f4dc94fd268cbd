package hubclient

import (
	"slices"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// maxExportLog bounds the deltas kept for resuming; older positions resume with replace_all.
const maxExportLog = 256

// exportLog numbers the changes of the cluster's exports, so that a reconnecting spoke resends
// only what the hub has not stored.
type exportLog struct {
	seq     uint64
	current map[fleet.PoolRef]fleet.Export
	log     []*pb.ExportDelta
}

func newExportLog() *exportLog {
	return &exportLog{current: map[fleet.PoolRef]fleet.Export{}}
}

// set makes exports the current set, recording a delta if it changed.
func (l *exportLog) set(exports []fleet.Export) {
	next := make(map[fleet.PoolRef]fleet.Export, len(exports))
	d := &pb.ExportDelta{}
	for _, e := range exports {
		next[e.Pool] = e
		if old, ok := l.current[e.Pool]; !ok || !old.Equal(e) {
			d.Upserts = append(d.Upserts, fleetpb.Export(e))
		}
	}
	for p := range l.current {
		if _, ok := next[p]; !ok {
			d.Removes = append(d.Removes, fleetpb.PoolRef(p))
		}
	}
	if len(d.Upserts) == 0 && len(d.Removes) == 0 {
		return
	}
	l.seq++
	d.Seq = l.seq
	l.current = next
	l.log = append(l.log, d)
	if len(l.log) > maxExportLog {
		l.log = slices.Delete(l.log, 0, len(l.log)-maxExportLog)
	}
}

// forget drops the recorded deltas: the next since resends the whole set, unless the hub has
// stored everything up to seq.
func (l *exportLog) forget() { l.log = nil }

// since returns what the hub needs after it has stored everything up to acked.
func (l *exportLog) since(acked uint64) []*pb.ExportDelta {
	if acked == l.seq && acked != 0 {
		return nil
	}
	if acked != 0 && acked < l.seq && len(l.log) > 0 && l.log[0].GetSeq() <= acked+1 {
		var out []*pb.ExportDelta
		for _, d := range l.log {
			if d.GetSeq() > acked {
				out = append(out, d)
			}
		}
		return out
	}
	// The hub knows nothing of this incarnation, or the log no longer reaches back: send it all.
	if l.seq <= acked {
		l.seq = acked
	}
	l.seq++
	full := &pb.ExportDelta{Seq: l.seq, ReplaceAll: true}
	for _, e := range l.sorted() {
		full.Upserts = append(full.Upserts, fleetpb.Export(e))
	}
	l.log = append(l.log[:0], full)
	return []*pb.ExportDelta{full}
}

// after returns the deltas with seq greater than sent.
func (l *exportLog) after(sent uint64) []*pb.ExportDelta {
	var out []*pb.ExportDelta
	for _, d := range l.log {
		if d.GetSeq() > sent {
			out = append(out, d)
		}
	}
	return out
}

func (l *exportLog) sorted() []fleet.Export {
	out := make([]fleet.Export, 0, len(l.current))
	for _, e := range l.current {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b fleet.Export) int { return a.Pool.Compare(b.Pool) })
	return out
}
