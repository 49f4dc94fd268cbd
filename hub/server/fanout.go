package server

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// The fan-out of capacity. Capacity is nearly all of what the hub sends: every report of every
// exporting cluster goes to every stream that wants its pool, and at 1,000 spokes of 2 pools
// reporting every second with 200 importing every pool, that is 400,000 entries a second.
// Converted and encoded once per stream, they took most of the hub's CPU. So the streams read
// the view at the same instants, the ticks of ViewInterval (counted from the server's start),
// and the streams that read at one tick from the same cursor with the same interest share the
// capacity changes, and the changes of imports (without their states) and clusters, also alike
// for all: the first to ask takes them from the view and encodes each entry once, the others copy
// the bytes. Each stream adds each capacity entry's age as it sends it (ages cross hosts; they
// must be the age at the send). What is each stream's own is small: the imports, with their
// states, of the pools its cluster exports (sent instead of the shared ones of those pools),
// found by a look at each of those pools rather than a walk through the view's log (at 1,000
// spokes, 200 of them reporting the import states of 2,000 pools, the walks took most of the
// hub's CPU).

// ticks are the instants at which the streams read the view, and what they share at each.
type ticks struct {
	model    *view.Model
	interval time.Duration
	epoch    time.Time

	mu sync.Mutex
	n  int64 // the current tick
	// seq is the view's seq when the current tick was first asked for: every stream of the tick
	// reads the changes up to it.
	seq    uint64
	shared map[sharedKey]*sharedCapacity
}

// newTicks returns the ticks of interval; none (a tick at every instant) when it is not positive.
func newTicks(model *view.Model, interval time.Duration) *ticks {
	interval = max(interval, time.Nanosecond)
	return &ticks{model: model, interval: interval, epoch: time.Now(), n: -1, shared: map[sharedKey]*sharedCapacity{}}
}

// next returns how long from now until the first tick after t.
func (t *ticks) next(now, after time.Time) time.Duration {
	k := after.Sub(t.epoch)/t.interval + 1
	return t.epoch.Add(k * t.interval).Sub(now)
}

// at returns the view's seq of the tick of now.
func (t *ticks) at(now time.Time) uint64 {
	n := int64(now.Sub(t.epoch) / t.interval)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > t.n {
		t.n, t.seq = n, t.model.Seq()
		clear(t.shared)
	}
	return t.seq
}

type sharedKey struct {
	interest string // interestKey of the pools
	inc      string
	from, to uint64
	snapshot bool // ticks.snapshot's, of the tick
}

// sharedCapacity is what changed of the capacity, the imports (without their states) and the
// clusters in one tick, for one cursor and interest, encoded.
type sharedCapacity struct {
	once sync.Once
	ok   bool // false when the view's log no longer held them
	// entries are the RemoteCapacity messages without their age.
	entries []capacityEntry
	// imports are the ViewUpdate's imports fields, each with its tag and length, and its pool:
	// a stream that exports the pool sends its own instead, with the import states.
	imports []sharedImport
	// fields are the ViewUpdate's imports_removed, clusters, clusters_removed and
	// capacity_removed fields, each with its tag and length.
	fields [][]byte
	// size is about what they take in a ViewUpdate.
	size int
	// seq and incomplete are a snapshot's cursor and mark (ticks.snapshot).
	seq        uint64
	incomplete bool
}

// empty reports whether nothing changed.
func (c *sharedCapacity) empty() bool {
	return len(c.entries) == 0 && len(c.imports) == 0 && len(c.fields) == 0
}

type sharedImport struct {
	pool  fleet.PoolRef
	field []byte
}

type capacityEntry struct {
	msg        []byte
	receivedAt time.Time
}

// capacity returns the changes in (from, to] of the imports (without their states), the clusters
// and the capacity of the pools of interest, encoded, shared with every stream that asks for the
// same during the tick whose seq is to.
func (t *ticks) capacity(inc string, from, to uint64, key string, interest view.Interest) *sharedCapacity {
	k := sharedKey{interest: key, inc: inc, from: from, to: to}
	t.mu.Lock()
	c := t.shared[k]
	if c == nil {
		c = &sharedCapacity{}
		if to == t.seq {
			t.shared[k] = c
		}
	}
	t.mu.Unlock()
	c.once.Do(func() {
		u, ok := t.model.SharedDelta(inc, from, to, interest)
		c.ok = ok
		c.fill(u)
	})
	return c
}

// snapshot returns a snapshot of the imports (without their states), the clusters and the
// capacity of the pools of interest, encoded, shared with every stream that needs one for the
// same interest during the tick of now. It holds the view as it was when the first of them
// asked (seq, incomplete); each stream adds the imports of its own pools with their states.
// At a hub's start a thousand streams need one within seconds: each costs the hub an encoding
// per tick and interest, not one per stream.
func (t *ticks) snapshot(now time.Time, key string, interest view.Interest) *sharedCapacity {
	t.at(now) // a new tick clears what the last one shared
	k := sharedKey{interest: key, snapshot: true}
	t.mu.Lock()
	c := t.shared[k]
	if c == nil {
		c = &sharedCapacity{}
		t.shared[k] = c
	}
	t.mu.Unlock()
	c.once.Do(func() {
		u := t.model.SharedSnapshot(interest)
		c.ok, c.seq, c.incomplete = true, u.Seq, u.Incomplete
		c.fill(u)
	})
	return c
}

// fill encodes u's imports, clusters and capacity; c.ok turns false when one cannot be.
func (c *sharedCapacity) fill(u view.Update) {
	for _, imp := range u.Imports {
		f, ok := c.encode(importsField, fleetpb.Import(imp))
		if !ok {
			return
		}
		c.imports = append(c.imports, sharedImport{pool: imp.Pool, field: f})
	}
	for _, p := range u.ImportsRemoved {
		if !c.field(importsRemovedField, fleetpb.PoolRef(p)) {
			return
		}
	}
	for _, cl := range u.Clusters {
		if !c.field(clustersField, fleetpb.Liveness(cl)) {
			return
		}
	}
	for _, id := range u.ClustersRemoved {
		f := protowire.AppendString(protowire.AppendTag(nil, clustersRemovedField, protowire.BytesType), id)
		c.fields = append(c.fields, f)
		c.size += len(f)
	}
	for _, rc := range u.Capacity {
		m := fleetpb.RemoteCapacityAt(rc, rc.ReceivedAt)
		m.Age = nil // each stream's own, at its send
		b, err := proto.Marshal(m)
		if err != nil {
			c.ok = false // not for messages built here; SinceFor's path then says why
			return
		}
		c.entries = append(c.entries, capacityEntry{msg: b, receivedAt: rc.ReceivedAt})
		c.size += len(b) + maxEntryOverhead
	}
	for _, k := range u.CapacityRemoved {
		if !c.field(capacityRemovedField, fleetpb.CapacityKey(k)) {
			return
		}
	}
}

// field adds m, encoded, as field n of a ViewUpdate.
func (c *sharedCapacity) field(n protowire.Number, m proto.Message) bool {
	f, ok := c.encode(n, m)
	if ok {
		c.fields = append(c.fields, f)
	}
	return ok
}

// encode returns m, encoded, as field n of a ViewUpdate, and counts it in c's size.
func (c *sharedCapacity) encode(n protowire.Number, m proto.Message) ([]byte, bool) {
	b, err := proto.Marshal(m)
	if err != nil {
		c.ok = false // not for messages built here; SinceFor's path then says why
		return nil, false
	}
	f := protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), b)
	c.size += len(f)
	return f, true
}

// interestKey names a set of pools: streams with the same key want the same capacity.
func interestKey(pools []fleet.PoolRef) string {
	sorted := slices.SortedFunc(slices.Values(pools), fleet.PoolRef.Compare)
	h := sha256.New()
	for _, p := range slices.Compact(sorted) {
		h.Write([]byte(p.Namespace))
		h.Write([]byte{0})
		h.Write([]byte(p.Name))
		h.Write([]byte{0})
	}
	return string(h.Sum(nil))
}

// maxEntryOverhead is the most a capacity entry adds to its message beyond the shared bytes:
// its tag and length (up to 1 + 5 bytes) and its age (up to 1 + 1 + 11 + 6).
const maxEntryOverhead = 25

var (
	viewFields           = (&pb.ViewUpdate{}).ProtoReflect().Descriptor().Fields()
	importsField         = viewFields.ByName("imports").Number()
	importsRemovedField  = viewFields.ByName("imports_removed").Number()
	clustersField        = viewFields.ByName("clusters").Number()
	capacityField        = viewFields.ByName("capacity").Number()
	capacityRemovedField = viewFields.ByName("capacity_removed").Number()
	clustersRemovedField = viewFields.ByName("clusters_removed").Number()
	ageField             = (&pb.RemoteCapacity{}).ProtoReflect().Descriptor().Fields().ByName("age").Number()
)

// appendAge appends the age field of a RemoteCapacity received at receivedAt and sent at now,
// as fleetpb.RemoteCapacityAt sets it: none without receivedAt, never negative.
func appendAge(b []byte, receivedAt, now time.Time) []byte {
	if receivedAt.IsZero() {
		return b
	}
	d := max(now.Sub(receivedAt), 0)
	secs, nanos := int64(d/time.Second), int32(d%time.Second)
	n := 0
	if secs != 0 {
		n += protowire.SizeTag(1) + protowire.SizeVarint(uint64(secs))
	}
	if nanos != 0 {
		n += protowire.SizeTag(2) + protowire.SizeVarint(uint64(nanos))
	}
	b = protowire.AppendTag(b, ageField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	if secs != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(secs))
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(nanos))
	}
	return b
}

// sharedViewUpdate returns the parts of a view update made of own (the stream's own: the imports,
// with their states, of the pools its cluster exports) and the shared changes c, each capacity
// entry with its age at now, in parts of about limit bytes. The shared changes travel as the
// parts' unknown fields: they are ViewUpdate fields, encoded, and a receiver parses them as such.
// A shared import of a pool the stream has its own import of is left out: each pool comes once.
func sharedViewUpdate(inc string, own view.Update, c *sharedCapacity, now time.Time, limit int) []*pb.ViewUpdate {
	first := viewUpdate(inc, own)
	parts := fleetpb.SplitView(first, limit)
	cur := parts[len(parts)-1]
	size := proto.Size(cur)
	left := c.size
	raw := make([]byte, 0, min(left, limit))
	var age [32]byte
	add := func(n int) {
		if len(raw) > 0 && size+len(raw)+n > limit {
			cur.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
			cur = &pb.ViewUpdate{Cursor: first.GetCursor(), Snapshot: first.GetSnapshot(), Incomplete: first.GetIncomplete()}
			parts = append(parts, cur)
			left -= len(raw)
			size, raw = proto.Size(cur), make([]byte, 0, min(max(left, n), limit))
		}
	}
	for _, e := range c.entries {
		a := appendAge(age[:0], e.receivedAt, now)
		n := len(e.msg) + len(a)
		add(protowire.SizeTag(capacityField) + protowire.SizeBytes(n))
		raw = protowire.AppendTag(raw, capacityField, protowire.BytesType)
		raw = protowire.AppendVarint(raw, uint64(n))
		raw = append(append(raw, e.msg...), a...)
	}
	for _, imp := range c.imports {
		if slices.ContainsFunc(own.Imports, func(o fleet.Import) bool { return o.Pool == imp.pool }) {
			continue // the stream's own, with its states, is in the first part
		}
		add(len(imp.field))
		raw = append(raw, imp.field...)
	}
	for _, f := range c.fields {
		add(len(f))
		raw = append(raw, f...)
	}
	cur.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	for _, p := range parts[:len(parts)-1] {
		p.More = true
	}
	return parts
}
