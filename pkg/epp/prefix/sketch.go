package prefix

import (
	"container/list"
	"errors"
	"fmt"
	"math/bits"
)

// A Sketch summarises, in a few kilobytes, which prompt prefixes a pool holds, for other
// clusters deciding where a spilled request would find its prefix in cache.
//
// It is a Bloom filter of a sample of the blocks the pool's endpoints served most recently: a
// block is sampled when the top bits of its hash are zero (one in Sample), wherever it sits in its
// prompt. Block hashes chain (a block's hash covers every block before it), so a sampled block
// found in the sketch says the whole prefix up to it is held. Matched walks a request's chain
// from its end and stops at the first sampled block the sketch holds: the prefix held, to within
// Sample blocks on average.
//
// The filter needs no hashing of its own: the block hashes are 64-bit XXH64 values, and the k
// bit positions are h1 + i·h2 mod m (Kirsch and Mitzenmacher's double hashing) with h1 and h2 the
// hash's low and high 32 bits. With m bits, n sampled blocks and k functions the false-positive
// rate is about (1 − e^(−kn/m))^k: the defaults, 4 KiB for at most 2,048 blocks with k = 11,
// give 0.05 %; the sample of 1 in 8 makes that 2,048 × 8 = 16,384 blocks of 64 bytes, 1 MiB of
// prompt text, the pool's most recent.
type Sketch struct {
	// Bloom is the filter's bits, a power of two bytes long.
	Bloom []byte
	// Hashes is k, the bit positions per block.
	Hashes int
	// Sample: one block hash in Sample (a power of two) is in the filter.
	Sample int
	// BlockBytes is the block length of the hashes, which the requester's chain must share.
	BlockBytes int
	// Entries counts the blocks put in.
	Entries int
}

// Sketch defaults: 4 KiB, 11 hash functions, at most 2,048 blocks, one block in 8.
const (
	SketchBytes   = 4096
	SketchHashes  = 11
	SketchEntries = 2048
	SketchSample  = 8
	// MaxSketchBytes bounds a sketch received from another cluster.
	MaxSketchBytes = 16384
)

// Sampled reports whether block hash h belongs in a sketch that samples one block in sample.
func Sampled(h uint64, sample int) bool {
	if sample <= 1 {
		return true
	}
	return h>>(64-bits.TrailingZeros(uint(sample))) == 0
}

// NewSketch builds a sketch of the sampled hashes among hashes, with the defaults.
func NewSketch(hashes []uint64, blockBytes int) Sketch {
	s := Sketch{Bloom: make([]byte, SketchBytes), Hashes: SketchHashes, Sample: SketchSample, BlockBytes: blockBytes}
	for _, h := range hashes {
		if Sampled(h, s.Sample) {
			s.add(h)
		}
	}
	return s
}

func (s *Sketch) add(h uint64) {
	m := uint64(len(s.Bloom)) * 8
	h1, h2 := h&0xffffffff, h>>32|1
	for i := range uint64(s.Hashes) {
		b := (h1 + i*h2) & (m - 1)
		s.Bloom[b>>3] |= 1 << (b & 7)
	}
	s.Entries++
}

// Has reports whether the sketch may hold block hash h (it holds it, or a false positive).
func (s Sketch) Has(h uint64) bool {
	m := uint64(len(s.Bloom)) * 8
	if m == 0 {
		return false
	}
	h1, h2 := h&0xffffffff, h>>32|1
	for i := range uint64(s.Hashes) {
		b := (h1 + i*h2) & (m - 1)
		if s.Bloom[b>>3]&(1<<(b&7)) == 0 {
			return false
		}
	}
	return true
}

// Matched returns how many leading blocks of chain (a prompt's hashes, as Indexer.Hashes makes
// them with the sketch's BlockBytes) the pool holds, as far as the sketch tells: up to and with
// its deepest sampled block in the sketch; 0 when none is.
func (s Sketch) Matched(chain []uint64) int {
	for i := len(chain) - 1; i >= 0; i-- {
		if Sampled(chain[i], s.Sample) && s.Has(chain[i]) {
			return i + 1
		}
	}
	return 0
}

// Validate checks a sketch received from another cluster.
func (s Sketch) Validate() error {
	n := len(s.Bloom)
	switch {
	case n == 0 || n > MaxSketchBytes || n&(n-1) != 0:
		return fmt.Errorf("prefix sketch of %d bytes: want a power of two up to %d", n, MaxSketchBytes)
	case s.Hashes < 1 || s.Hashes > 32:
		return fmt.Errorf("prefix sketch with %d hash functions: want 1..32", s.Hashes)
	case s.Sample < 1 || s.Sample > 1024 || s.Sample&(s.Sample-1) != 0:
		return fmt.Errorf("prefix sketch sampling 1 block in %d: want a power of two up to 1024", s.Sample)
	case s.BlockBytes < 1 || s.BlockBytes > 1<<16:
		return errors.New("prefix sketch block size: want 1..65536 bytes")
	}
	return nil
}

// Recent returns up to max of the pool's most recent sampled block hashes (one block in
// sample), taken from the endpoints' LRUs in turn, most recent first, each once: what a sketch
// of the pool holds.
func (ix *Indexer) Recent(max, sample int) []uint64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	cursors := make([]*list.Element, 0, len(ix.endpoints))
	for _, l := range ix.endpoints {
		if el := l.order.Front(); el != nil {
			cursors = append(cursors, el)
		}
	}
	seen := make(map[uint64]bool, max)
	out := make([]uint64, 0, max)
	for len(cursors) > 0 && len(out) < max {
		live := cursors[:0]
		for _, el := range cursors {
			// Step this endpoint to its next sampled block.
			for el != nil && !Sampled(el.Value.(*entry).hash, sample) {
				el = el.Next()
			}
			if el == nil {
				continue
			}
			if h := el.Value.(*entry).hash; !seen[h] && len(out) < max {
				seen[h] = true
				out = append(out, h)
			}
			if el = el.Next(); el != nil {
				live = append(live, el)
			}
		}
		cursors = live
	}
	return out
}

// BlockSize returns the block length in bytes of the indexer's hashes.
func (ix *Indexer) BlockSize() int { return ix.opts.BlockSize }
