package prefix

import "github.com/cespare/xxhash/v2"

// xxh64 is XXH64 of s with seed (github.com/cespare/xxhash): fast, the same in every process, and
// no allocation. The Go runtime's own hash (hash/maphash) is faster still but seeded at random per
// process, so its hashes cannot cross replicas.
func xxh64(seed uint64, s string) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(seed)
	_, _ = d.WriteString(s)
	return d.Sum64()
}
