package fleetpb

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Parts: a message too large for one gRPC message travels as parts, each marked more but the
// last (docs/sync-protocol.md, "Parts"). These functions cut a message into parts; the receiver
// merges them (proto.Merge concatenates their lists) and applies the whole.
const (
	// ViewPartBytes is the size the hub aims at for each part of a view update: a quarter of
	// gRPC's default 4 MiB receive limit, so that any client can take one.
	ViewPartBytes = 1 << 20
	// SpokePartBytes is the size a spoke aims at for each part it sends: half the 1 MiB the hub
	// accepts per message.
	SpokePartBytes = 512 << 10
	// MaxPartEntries is the most entries of each list in one message, the per-message caps of
	// spillway.v1 (1,000 exports, removes, pools per capacity report).
	MaxPartEntries = 1000
)

// packer cuts the entries of one message into parts of about limit bytes and, when maxEntries
// is not 0, at most maxEntries entries.
type packer[M proto.Message] struct {
	limit, maxEntries int
	newPart           func() M
	more              func(M)
	parts             []M
	size, n           int
}

// add puts one entry of n bytes into the current part, or into a new one when it would take
// the current one past its limits; an entry larger than the limit is a part of its own.
func (p *packer[M]) add(m proto.Message, put func(M)) { p.addSized(entrySize(m), put) }

// addString puts one string entry.
func (p *packer[M]) addString(s string, put func(M)) {
	p.addSized(1+protowire.SizeBytes(len(s)), put)
}

func (p *packer[M]) addSized(n int, put func(M)) {
	if len(p.parts) == 0 || (p.n > 0 && (p.size+n > p.limit || (p.maxEntries > 0 && p.n >= p.maxEntries))) {
		p.parts = append(p.parts, p.newPart())
		p.size, p.n = 0, 0
	}
	put(p.parts[len(p.parts)-1])
	p.size += n
	p.n++
}

// done returns the parts, at least one, each but the last marked more.
func (p *packer[M]) done() []M {
	if len(p.parts) == 0 {
		p.parts = append(p.parts, p.newPart())
	}
	for _, m := range p.parts[:len(p.parts)-1] {
		p.more(m)
	}
	return p.parts
}

// entrySize is what an entry of a repeated message field adds to its message: a tag, a length
// and the entry.
func entrySize(m proto.Message) int { return 1 + protowire.SizeBytes(proto.Size(m)) }

// fits reports whether a message of at most n entries per list needs no parts.
func fits(m proto.Message, n, limit int) bool { return n <= MaxPartEntries && proto.Size(m) <= limit }

// SplitView cuts a view update into parts of about limit bytes; one part when it fits.
func SplitView(u *pb.ViewUpdate, limit int) []*pb.ViewUpdate {
	if proto.Size(u) <= limit {
		return []*pb.ViewUpdate{u}
	}
	p := packer[*pb.ViewUpdate]{limit: limit, newPart: func() *pb.ViewUpdate {
		return &pb.ViewUpdate{Cursor: u.GetCursor(), Snapshot: u.GetSnapshot(), Incomplete: u.GetIncomplete()}
	}, more: func(v *pb.ViewUpdate) { v.More = true }}
	for _, x := range u.GetImports() {
		p.add(x, func(v *pb.ViewUpdate) { v.Imports = append(v.Imports, x) })
	}
	for _, x := range u.GetImportsRemoved() {
		p.add(x, func(v *pb.ViewUpdate) { v.ImportsRemoved = append(v.ImportsRemoved, x) })
	}
	for _, x := range u.GetClusters() {
		p.add(x, func(v *pb.ViewUpdate) { v.Clusters = append(v.Clusters, x) })
	}
	for _, x := range u.GetClustersRemoved() {
		p.addString(x, func(v *pb.ViewUpdate) { v.ClustersRemoved = append(v.ClustersRemoved, x) })
	}
	for _, x := range u.GetCapacity() {
		p.add(x, func(v *pb.ViewUpdate) { v.Capacity = append(v.Capacity, x) })
	}
	for _, x := range u.GetCapacityRemoved() {
		p.add(x, func(v *pb.ViewUpdate) { v.CapacityRemoved = append(v.CapacityRemoved, x) })
	}
	return p.done()
}

// SplitExports cuts an export delta into parts of about limit bytes and at most
// MaxPartEntries entries each, all with the delta's seq and replace_all.
func SplitExports(d *pb.ExportDelta, limit int) []*pb.ExportDelta {
	if fits(d, max(len(d.GetUpserts()), len(d.GetRemoves())), limit) {
		return []*pb.ExportDelta{d}
	}
	p := packer[*pb.ExportDelta]{limit: limit, maxEntries: MaxPartEntries, newPart: func() *pb.ExportDelta {
		return &pb.ExportDelta{Seq: d.GetSeq(), ReplaceAll: d.GetReplaceAll()}
	}, more: func(v *pb.ExportDelta) { v.More = true }}
	for _, x := range d.GetUpserts() {
		p.add(x, func(v *pb.ExportDelta) { v.Upserts = append(v.Upserts, x) })
	}
	for _, x := range d.GetRemoves() {
		p.add(x, func(v *pb.ExportDelta) { v.Removes = append(v.Removes, x) })
	}
	return p.done()
}

// SplitCapacity cuts a capacity report into parts of about limit bytes and at most
// MaxPartEntries entries each.
func SplitCapacity(r *pb.CapacityReport, limit int) []*pb.CapacityReport {
	if fits(r, max(len(r.GetPools()), len(r.GetRemoved())), limit) {
		return []*pb.CapacityReport{r}
	}
	p := packer[*pb.CapacityReport]{limit: limit, maxEntries: MaxPartEntries,
		newPart: func() *pb.CapacityReport { return &pb.CapacityReport{} }, more: func(v *pb.CapacityReport) { v.More = true }}
	for _, x := range r.GetPools() {
		p.add(x, func(v *pb.CapacityReport) { v.Pools = append(v.Pools, x) })
	}
	for _, x := range r.GetRemoved() {
		p.add(x, func(v *pb.CapacityReport) { v.Removed = append(v.Removed, x) })
	}
	return p.done()
}

// SplitImportReport cuts an import report into parts of about limit bytes.
func SplitImportReport(r *pb.ImportReport, limit int) []*pb.ImportReport {
	if proto.Size(r) <= limit {
		return []*pb.ImportReport{r}
	}
	p := packer[*pb.ImportReport]{limit: limit,
		newPart: func() *pb.ImportReport { return &pb.ImportReport{} }, more: func(v *pb.ImportReport) { v.More = true }}
	for _, x := range r.GetPools() {
		p.add(x, func(v *pb.ImportReport) { v.Pools = append(v.Pools, x) })
	}
	return p.done()
}

// SplitInterest cuts a capacity interest into parts of about limit bytes.
func SplitInterest(i *pb.Interest, limit int) []*pb.Interest {
	if proto.Size(i) <= limit {
		return []*pb.Interest{i}
	}
	p := packer[*pb.Interest]{limit: limit,
		newPart: func() *pb.Interest { return &pb.Interest{} }, more: func(v *pb.Interest) { v.More = true }}
	for _, x := range i.GetCapacityInterest() {
		p.add(x, func(v *pb.Interest) { v.CapacityInterest = append(v.CapacityInterest, x) })
	}
	return p.done()
}
