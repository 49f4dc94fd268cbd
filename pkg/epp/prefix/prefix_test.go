package prefix

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestMatchLongestSharedPrefix(t *testing.T) {
	ix := New(Options{BlockSize: 4})
	a := ix.Hashes(nil, "m", "aaaabbbbccccdddd")
	ix.Add("10.0.0.1:8000", a)
	ix.Add("10.0.0.2:8000", ix.Hashes(nil, "m", "aaaabbbbxxxx"))

	got := map[string]int{}
	ix.Match(ix.Hashes(nil, "m", "aaaabbbbccccdddd-and-more"), func(e string, n int) { got[e] = n })
	if got["10.0.0.1:8000"] != 4 || got["10.0.0.2:8000"] != 2 || len(got) != 2 {
		t.Fatalf("matches %v: want 4 blocks on .1 and 2 on .2", got)
	}
	got = map[string]int{}
	ix.Match(ix.Hashes(nil, "other-model", "aaaabbbbccccdddd"), func(e string, n int) { got[e] = n })
	if len(got) != 0 {
		t.Fatalf("another model shares no cache: %v", got)
	}
	if h := ix.Hashes(nil, "m", "abc"); len(h) != 0 {
		t.Fatalf("a prompt shorter than a block has %d blocks", len(h))
	}
}

func TestCapacityPerEndpointEvictsOldest(t *testing.T) {
	ix := New(Options{BlockSize: 4, CapacityPerEndpoint: 3})
	ix.Add("e", ix.Hashes(nil, "m", "aaaabbbb"))
	ix.Add("e", ix.Hashes(nil, "m", "ccccdddd"))
	if ix.Blocks("e") != 3 {
		t.Fatalf("blocks %d, want the capacity 3", ix.Blocks("e"))
	}
	hits := 0
	ix.Match(ix.Hashes(nil, "m", "aaaabbbb"), func(string, int) { hits++ })
	if hits != 0 {
		t.Fatal("the oldest prefix was not evicted")
	}
	ix.Forget("e")
	if ix.Blocks("e") != 0 || len(ix.blocks) != 0 {
		t.Fatal("Forget left blocks behind")
	}
}

func TestMaxBlocks(t *testing.T) {
	ix := New(Options{BlockSize: 1, MaxBlocks: 10})
	if n := len(ix.Hashes(nil, "m", strings.Repeat("x", 100))); n != 10 {
		t.Fatalf("hashed %d blocks, want 10", n)
	}
}

// TestXXH64 checks the block hash against XXH64's published values (seed 0) and values of the
// reference implementation with a seed, across the lengths of every code path (< 4, < 8, < 32 and
// longer, with every tail).
func TestXXH64(t *testing.T) {
	for _, tc := range []struct {
		seed uint64
		s    string
		want uint64
	}{
		{0, "", 0xef46db3751d8e999},
		{0, "a", 0xd24ec4f1a98c6e5b},
		{0, "abc", 0x44bc2cf5ad770999},
		{0, "Nobody inspects the spammish repetition", 0xfbcea83c8a378bf1},
		{20141025, "", 0x493d554c526625ba},
		{20141025, "a", 0x9fe3ce221f1dd34a},
		{20141025, "abc", 0x15bf5082de140c67},
		{20141025, "Nobody inspects the spammish repetition", 0xce06936136852706},
	} {
		if got := xxh64(tc.seed, tc.s); got != tc.want {
			t.Errorf("xxh64(%d, %q) = %#x, want %#x", tc.seed, tc.s, got, tc.want)
		}
	}
}

// TestHashesAreTheSameInEveryIndexer: replicas exchange hashes, so two indexers (two processes)
// hash a prompt alike, and a prefix one learned by AddReplicated matches in the other.
func TestHashesAreTheSameInEveryIndexer(t *testing.T) {
	a, b := New(Options{BlockSize: 4}), New(Options{BlockSize: 4})
	ha := a.Hashes(nil, "m", "aaaabbbbcccc")
	if hb := b.Hashes(nil, "m", "aaaabbbbcccc"); !slices.Equal(ha, hb) {
		t.Fatalf("hashes %x and %x of one prompt", ha, hb)
	}
	b.AddReplicated("10.0.0.1:8000", ha)
	got := 0
	b.Match(b.Hashes(nil, "m", "aaaabbbbccccdddd"), func(e string, n int) { got = n })
	if got != 3 {
		t.Fatalf("matched %d blocks of a replicated prefix, want 3", got)
	}
}

type recorder struct {
	ix    *Indexer
	calls []string
}

func (r *recorder) Added(endpoint string, hashes []uint64) {
	// Called outside the indexer's lock: reading the indexer here must not deadlock.
	r.calls = append(r.calls, fmt.Sprintf("%s:%d:%d", endpoint, len(hashes), r.ix.Blocks(endpoint)))
}

// TestObserverLearnsWhatOthersNeed: Add tells the observer (after recording) of the blocks new to
// the endpoint, not of those it told recently, and again of a block once ResendAfter blocks were
// inserted for the endpoint since; AddReplicated tells nothing, so a replicated prefix is not
// sent on, and counts as told.
func TestObserverLearnsWhatOthersNeed(t *testing.T) {
	ix := New(Options{BlockSize: 4, ResendAfter: 3})
	r := &recorder{ix: ix}
	ix.SetObserver(r)
	ix.Add("e1", ix.Hashes(nil, "m", "aaaabbbb"))     // 2 new blocks: told
	ix.Add("e1", ix.Hashes(nil, "m", "aaaabbbbcccc")) // only cccc is new
	ix.AddReplicated("e2", ix.Hashes(nil, "m", "ccccdddd"))
	ix.Add("e2", ix.Hashes(nil, "m", "ccccdddd")) // received just now: nothing to tell
	ix.Add("e1", nil)
	ix.Add("e1", ix.Hashes(nil, "m", "xxxx"))         // the 4th insert for e1
	ix.Add("e1", ix.Hashes(nil, "m", "aaaabbbbcccc")) // aaaa (told at the 1st) is due, bbbb (2nd) not
	ix.SetObserver(nil)
	ix.Add("e3", ix.Hashes(nil, "m", "eeee"))
	if want := []string{"e1:2:2", "e1:1:3", "e1:1:4", "e1:1:4"}; !slices.Equal(r.calls, want) {
		t.Fatalf("observer calls %v, want %v", r.calls, want)
	}
	if ix.Blocks("e2") != 2 || ix.Blocks("e3") != 1 {
		t.Fatalf("blocks e2 %d e3 %d, want 2 and 1", ix.Blocks("e2"), ix.Blocks("e3"))
	}
}

type discard struct{}

func (discard) Added(string, []uint64) {}

// BenchmarkHashes: hashing a 4 KB prompt (64 blocks) must not allocate into a reused slice.
func BenchmarkHashes(b *testing.B) {
	ix := New(Options{})
	prompt := strings.Repeat("You are a helpful assistant. ", 150)[:4096]
	dst := make([]uint64, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(prompt)))
	for b.Loop() {
		dst = ix.Hashes(dst[:0], "meta-llama/Llama-3.1-8B-Instruct", prompt)
	}
}

// BenchmarkAddObserved: a repeated prefix (the common case: blocks already held) with an
// observer allocates nothing, also when its blocks are due to be told again.
func BenchmarkAddObserved(b *testing.B) {
	ix := New(Options{ResendAfter: 1})
	ix.SetObserver(discard{})
	hashes := ix.Hashes(nil, "m", strings.Repeat("x", 4096))
	ix.Add("10.0.0.1:8000", hashes)
	b.ReportAllocs()
	for b.Loop() {
		ix.Add("10.0.0.1:8000", hashes)
	}
}

// TestSnapshotRebuildsTheIndex: a snapshot applied to an empty indexer gives the same matches,
// and the same eviction order (least recent first), within its bound.
func TestSnapshotRebuildsTheIndex(t *testing.T) {
	a := New(Options{BlockSize: 4, CapacityPerEndpoint: 3})
	a.Add("e1", a.Hashes(nil, "m", "aaaabbbb"))
	a.Add("e1", a.Hashes(nil, "m", "cccc"))
	a.Add("e2", a.Hashes(nil, "m", "dddd"))
	b := New(Options{BlockSize: 4, CapacityPerEndpoint: 3})
	for _, h := range a.Snapshot(100) {
		b.AddReplicated(h.Endpoint, h.Hashes)
	}
	if b.Blocks("e1") != 3 || b.Blocks("e2") != 1 {
		t.Fatalf("blocks e1 %d e2 %d, want 3 and 1", b.Blocks("e1"), b.Blocks("e2"))
	}
	// One more block on e1 evicts its least recent one, "aaaa", in both.
	for _, ix := range []*Indexer{a, b} {
		ix.Add("e1", ix.Hashes(nil, "m", "eeee"))
		n := 0
		ix.Match(ix.Hashes(nil, "m", "aaaabbbb"), func(string, int) { n++ })
		m := 0
		ix.Match(ix.Hashes(nil, "m", "cccc"), func(string, int) { m++ })
		if n != 0 || m != 1 {
			t.Fatalf("after eviction: aaaabbbb matched %d, cccc %d; want 0 and 1", n, m)
		}
	}
	if s := a.Snapshot(2); len(s) != 2 || len(s[0].Hashes) != 1 || len(s[1].Hashes) != 1 {
		t.Fatalf("a snapshot of 2 blocks: %v", s)
	}
}
