package server

import (
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// maxDeltaEntries bounds the upserts, and the removes, of one export delta across its parts
// when the hub sets no cap on a cluster's exports.
const maxDeltaEntries = 100_000

// assembler gathers what a spoke sends in parts (docs/sync-protocol.md, "Parts"): export deltas,
// import reports and interests are applied whole, once their last part arrived; a capacity
// report's parts are applied as they come, but count once against the report rate, and name
// each pool at most once. Every list is bounded across its parts, so that a spoke cannot grow
// the hub's memory by never sending the last part.
type assembler struct {
	// maxExports bounds a delta's upserts and removes across its parts.
	maxExports int

	exports  *registry.ExportDelta
	capacity map[fleet.PoolRef]struct{} // the pools of the report whose parts are arriving
	imports  []fleet.PoolImportStatus
	interest []fleet.PoolRef
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

// exportPart adds a part of an export delta; it returns the whole delta (done) with its last.
func (a *assembler) exportPart(d registry.ExportDelta, more bool) (whole registry.ExportDelta, done bool, err error) {
	if a.exports == nil {
		a.exports = &d
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
	if more {
		return whole, false, nil
	}
	whole, a.exports = *a.exports, nil
	return whole, true, nil
}

// capacityPart notes a part of a capacity report: first is true when it opens a report (which
// the report rate counts). A pool named twice in one report is refused.
func (a *assembler) capacityPart(pools, removed []fleet.PoolRef, more bool) (first bool, err error) {
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
