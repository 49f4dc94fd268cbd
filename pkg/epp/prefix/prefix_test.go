package prefix

import (
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
