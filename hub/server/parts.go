package server

import (
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

const (
	// maxDeltaEntries bounds the upserts, and the removes, of one export delta across its parts
	// when the hub sets no cap on a cluster's exports.
	maxDeltaEntries = 100_000
	// maxDeltaBytes bounds the size of one export delta across its parts (a thousand exports
	// with the most labels allowed take about 25 MiB).
	maxDeltaBytes = 64 << 20
)

// assembler gathers what a spoke sends in parts (docs/sync-protocol.md, "Parts"): export deltas,
// import reports and interests are applied whole, once their last part arrived; a capacity
// report's parts are applied as they come, but count once against the report rate, and name
// each pool at most once. Every list is bounded across its parts (a delta also in bytes), so
// that a spoke cannot grow the hub's memory without bound by never sending the last part; and a
// part that continues (more) carries at least one entry, so that parts cannot dodge the rate
// limits.
type assembler struct {
	// maxExports bounds a delta's upserts and removes across its parts.
	maxExports int

	exports *registry.ExportDelta
	// exportPools and exportBytes are the pools named so far by the delta whose parts are
	// arriving, and their size.
	exportPools map[fleet.PoolRef]struct{}
	exportBytes int
	capacity    map[fleet.PoolRef]struct{} // the pools of the report whose parts are arriving
	imports     []fleet.PoolImportStatus
	interest    []fleet.PoolRef
	// importing and interesting are true while parts of an import report or an interest
	// arrive (the lists above may be empty meanwhile).
	importing, interesting bool
}

func newAssembler(maxExportsPerCluster int) *assembler {
	a := &assembler{maxExports: maxExportsPerCluster}
	if a.maxExports <= 0 {
		a.maxExports = maxDeltaEntries
	}
	a.maxExports = max(a.maxExports, maxExportsPerDelta)
	return a
}

// exportPart adds a part of an export delta, of size bytes on the wire; it returns the whole
// delta (done) with its last. A pool named twice across the parts is refused, as it is within
// one message.
func (a *assembler) exportPart(d registry.ExportDelta, size int, more bool) (whole registry.ExportDelta, done bool, err error) {
	if more && len(d.Upserts)+len(d.Removes) == 0 {
		return whole, false, invalid("exports.more", "a part that continues must carry upserts or removes")
	}
	if a.exports == nil && !more {
		return d, true, nil // a delta of one message: nothing to remember
	}
	if a.exports == nil {
		a.exports, a.exportPools, a.exportBytes = &d, map[fleet.PoolRef]struct{}{}, 0
	} else {
		if d.Seq != a.exports.Seq || d.ReplaceAll != a.exports.ReplaceAll {
			return whole, false, invalid("exports.seq", "%d (replace_all %v) in the middle of the parts of delta %d (replace_all %v): every part carries its delta's seq and replace_all",
				d.Seq, d.ReplaceAll, a.exports.Seq, a.exports.ReplaceAll)
		}
		a.exports.Upserts = append(a.exports.Upserts, d.Upserts...)
		a.exports.Removes = append(a.exports.Removes, d.Removes...)
	}
	if n := max(len(a.exports.Upserts), len(a.exports.Removes)); n > a.maxExports {
		return whole, false, tooMany(limitExportsPerDelta, "exports", n, a.maxExports, "upserts or removes across the parts of one delta")
	}
	if a.exportBytes += size; a.exportBytes > maxDeltaBytes {
		return whole, false, invalid("exports", "%d bytes across the parts of one delta, at most %d", a.exportBytes, maxDeltaBytes)
	}
	named := make([]fleet.PoolRef, 0, len(d.Upserts)+len(d.Removes))
	for _, e := range d.Upserts {
		named = append(named, e.Pool)
	}
	for _, p := range append(named, d.Removes...) {
		if _, dup := a.exportPools[p]; dup {
			return whole, false, invalid("exports", "%s named twice in the parts of delta %d", p, a.exports.Seq)
		}
		a.exportPools[p] = struct{}{}
	}
	if more {
		return whole, false, nil
	}
	whole, a.exports, a.exportPools = *a.exports, nil, nil
	return whole, true, nil
}

// capacityPart notes a part of a capacity report: first is true when it opens a report (which
// the report rate counts). A pool named twice in one report is refused.
func (a *assembler) capacityPart(pools, removed []fleet.PoolRef, more bool) (first bool, err error) {
	if more && len(pools)+len(removed) == 0 {
		return false, invalid("capacity.more", "a part that continues must carry pools or removals")
	}
	first = a.capacity == nil
	if !more && first {
		return true, nil // a report of one message: nothing to remember
	}
	if first {
		a.capacity = map[fleet.PoolRef]struct{}{}
	}
	for _, ps := range [][]fleet.PoolRef{pools, removed} {
		for _, p := range ps {
			if _, dup := a.capacity[p]; dup {
				return first, invalid("capacity.pools", "%s twice in the parts of one report", p)
			}
			a.capacity[p] = struct{}{}
		}
	}
	if len(a.capacity) > maxDeltaEntries {
		return first, tooMany(limitPoolsPerReport, "capacity.pools", len(a.capacity), maxDeltaEntries, "pools across the parts of one report")
	}
	if !more {
		a.capacity = nil
	}
	return first, nil
}

// importPart adds a part of an import report; it returns the whole report with its last.
func (a *assembler) importPart(states []fleet.PoolImportStatus, more bool) (whole []fleet.PoolImportStatus, done bool, err error) {
	if more && len(states) == 0 {
		return nil, false, invalid("imports.more", "a part that continues must carry pools")
	}
	if !a.importing {
		a.imports, a.importing = nil, true
	}
	a.imports = append(a.imports, states...)
	if n := len(a.imports); n > maxInterest {
		return nil, false, tooMany(limitPoolsPerImports, "imports.pools", n, maxInterest, "pools across the parts of one report")
	}
	if more {
		return nil, false, nil
	}
	whole, a.imports, a.importing = a.imports, nil, false
	return whole, true, nil
}

// interestPart adds a part of an interest; it returns the whole interest with its last.
func (a *assembler) interestPart(pools []fleet.PoolRef, more bool) (whole []fleet.PoolRef, done bool, err error) {
	if more && len(pools) == 0 {
		return nil, false, invalid("interest.more", "a part that continues must carry pools")
	}
	if !a.interesting {
		a.interest, a.interesting = nil, true
	}
	a.interest = append(a.interest, pools...)
	if n := len(a.interest); n > maxInterest {
		return nil, false, tooMany(limitPoolsPerInterest, "interest.capacity_interest", n, maxInterest, "pools across the parts of one interest")
	}
	if more {
		return nil, false, nil
	}
	whole, a.interest, a.interesting = a.interest, nil, false
	return whole, true, nil
}
