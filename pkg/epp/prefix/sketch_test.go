package prefix

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestSketchMatchesHeldPrefixes: a sketch of a pool's recent blocks tells how much of a prompt's
// prefix the pool holds, to within the sample, and nothing of prompts it never served.
func TestSketchMatchesHeldPrefixes(t *testing.T) {
	ix := New(Options{})
	contexts := make([]string, 6)
	for i := range contexts {
		contexts[i] = strings.Repeat(fmt.Sprintf("Document %d says something about the matter at hand. ", i), 300) // ~16 KB
	}
	for i, c := range contexts[:3] {
		ix.Add(fmt.Sprintf("10.0.0.%d:8000", i%2), ix.Hashes(nil, "m", c+" question one"))
	}
	sk := NewSketch(ix.Recent(SketchEntries, SketchSample), 64)
	if err := sk.Validate(); err != nil {
		t.Fatal(err)
	}
	for i, c := range contexts {
		chain := ix.Hashes(nil, "m", c+" another question")
		got := sk.Matched(chain)
		if i < 3 && (got > len(chain) || got < len(chain)-4*SketchSample) {
			t.Errorf("context %d, held: matched %d of %d blocks", i, got, len(chain))
		}
		if i >= 3 && got != 0 {
			t.Errorf("context %d, never served: matched %d blocks", i, got)
		}
	}
	// Another model's chain shares no block.
	if got := sk.Matched(ix.Hashes(nil, "other", contexts[0])); got != 0 {
		t.Errorf("another model matched %d blocks", got)
	}
}

// TestSketchFalsePositives: with the defaults full (2,048 sampled blocks), random blocks are
// found at about the rate the parameters promise (0.05 %); the test allows 0.2 %.
func TestSketchFalsePositives(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var in []uint64
	for len(in) < SketchEntries {
		if h := rng.Uint64(); Sampled(h, SketchSample) {
			in = append(in, h)
		}
	}
	sk := NewSketch(in, 64)
	if sk.Entries != SketchEntries || len(sk.Bloom) != SketchBytes {
		t.Fatalf("%d entries in %d bytes", sk.Entries, len(sk.Bloom))
	}
	for _, h := range in {
		if !sk.Has(h) {
			t.Fatalf("%x put in and not found", h)
		}
	}
	const probes = 200000
	fp := 0
	for range probes {
		if sk.Has(rng.Uint64()) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.002 {
		t.Fatalf("false-positive rate %.4f%%", rate*100)
	}
}

// TestRecentIsBoundedAndMostRecentFirst: Recent takes the newest sampled blocks of every
// endpoint in turn, each once, at most max.
func TestRecentIsBoundedAndMostRecentFirst(t *testing.T) {
	ix := New(Options{})
	old := ix.Hashes(nil, "m", strings.Repeat("an old document. ", 2000))
	ix.Add("a", old)
	recent := ix.Hashes(nil, "m", strings.Repeat("a recent document. ", 2000))
	ix.Add("a", recent)
	ix.Add("b", recent) // the same blocks on two endpoints count once
	got := ix.Recent(10, SketchSample)
	if len(got) != 10 {
		t.Fatalf("%d blocks, want 10", len(got))
	}
	inRecent := map[uint64]bool{}
	for _, h := range recent {
		inRecent[h] = true
	}
	seen := map[uint64]bool{}
	for _, h := range got {
		if !Sampled(h, SketchSample) || seen[h] || !inRecent[h] {
			t.Fatalf("block %x: sampled %v, twice %v, of the recent prompt %v", h, Sampled(h, SketchSample), seen[h], inRecent[h])
		}
		seen[h] = true
	}
}

func TestSketchValidate(t *testing.T) {
	good := Sketch{Bloom: make([]byte, 64), Hashes: 3, Sample: 8, BlockBytes: 64}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Sketch){
		"empty":             func(s *Sketch) { s.Bloom = nil },
		"not a power of 2":  func(s *Sketch) { s.Bloom = make([]byte, 100) },
		"too large":         func(s *Sketch) { s.Bloom = make([]byte, 2*MaxSketchBytes) },
		"no hash function":  func(s *Sketch) { s.Hashes = 0 },
		"sample not pow2":   func(s *Sketch) { s.Sample = 6 },
		"no block size":     func(s *Sketch) { s.BlockBytes = 0 },
		"too many hashes":   func(s *Sketch) { s.Hashes = 33 },
		"sample too sparse": func(s *Sketch) { s.Sample = 2048 },
	} {
		s := good
		s.Bloom = append([]byte(nil), good.Bloom...)
		mod(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzSketch: any sketch that validates answers Has and Matched without panicking.
func FuzzSketch(f *testing.F) {
	f.Add(make([]byte, 64), uint8(3), uint16(8), uint64(42))
	f.Fuzz(func(t *testing.T, bloom []byte, k uint8, sample uint16, h uint64) {
		s := Sketch{Bloom: bloom, Hashes: int(k), Sample: int(sample), BlockBytes: 64}
		if s.Validate() != nil {
			return
		}
		s.Has(h)
		s.Matched([]uint64{h, h ^ 1, h >> 3})
	})
}
