// Package prefix remembers which endpoint served which prompt prefix, so the prefix-cache scorer
// can send a request to the endpoint most likely to hold its prefix in KV-cache.
//
// A prompt is cut into blocks of BlockSize bytes; block i's hash is the 64-bit XXH64 of its bytes
// seeded with the hash of block i-1 (block 0's seed is the hash of the model name), so equal hashes
// mean equal prefixes. The hashes are the same in every process: replicas of the EPP exchange
// them (pkg/affinity) and find each other's prefixes. The indexer maps block hashes to the
// endpoints that served them and bounds each endpoint's share with an LRU, as a model server's
// cache is bounded.
//
// Add records a pick of this process and tells the Observer, if any, of the blocks other replicas
// need to hear of: those new to the endpoint, and those held already but not told since
// ResendAfter blocks were inserted for the endpoint (so that the other replicas' LRUs keep a block
// this replica keeps using). AddReplicated records a pick another replica made and tells no one,
// so that nothing is replicated twice.
package prefix

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Options bound the indexer. The defaults are GIE's prefix-cache plugin defaults.
type Options struct {
	// BlockSize is the block length in bytes of prompt text; 64 when zero.
	BlockSize int
	// MaxBlocks is how many leading blocks of a prompt are hashed; 256 when zero.
	MaxBlocks int
	// CapacityPerEndpoint bounds the blocks remembered per endpoint; 31,250 when zero.
	CapacityPerEndpoint int
	// ResendAfter is how many blocks must be inserted for an endpoint after a block of it was
	// told to the observer (or received from another replica) before a pick that uses the block
	// again tells it again; a quarter of CapacityPerEndpoint when zero. A block told again is
	// among the most recent quarter of every replica's LRU, far from eviction.
	ResendAfter int
}

// Observer learns of the prefixes this process's picks record, to share them with other
// replicas. Added is called after the indexer has recorded them, outside its lock, on the
// request's path: it must be quick, and must not keep hashes (the caller reuses it).
type Observer interface {
	Added(endpoint string, hashes []uint64)
}

// Indexer is safe for concurrent use.
type Indexer struct {
	opts     Options
	observer atomic.Pointer[observerRef]

	mu        sync.Mutex
	blocks    map[uint64][]string // block hash → endpoints that served it
	endpoints map[string]*endpointLRU
}

type endpointLRU struct {
	order *list.List // of *entry, front = most recent
	items map[uint64]*list.Element
	// inserts counts the blocks ever inserted for the endpoint.
	inserts uint64
}

// entry is one block an endpoint holds.
type entry struct {
	hash uint64
	// told is the endpoint's inserts when the block was last told to the observer or received
	// from another replica.
	told uint64
}

// New returns an empty indexer.
func New(o Options) *Indexer {
	if o.BlockSize <= 0 {
		o.BlockSize = 64
	}
	if o.MaxBlocks <= 0 {
		o.MaxBlocks = 256
	}
	if o.CapacityPerEndpoint <= 0 {
		o.CapacityPerEndpoint = 31250
	}
	if o.ResendAfter <= 0 {
		o.ResendAfter = max(o.CapacityPerEndpoint/4, 1)
	}
	return &Indexer{opts: o, blocks: map[uint64][]string{}, endpoints: map[string]*endpointLRU{}}
}

type observerRef struct{ o Observer }

// SetObserver makes o learn of every later Add (nil: none).
func (ix *Indexer) SetObserver(o Observer) {
	if o == nil {
		ix.observer.Store(nil)
		return
	}
	ix.observer.Store(&observerRef{o})
}

// Hashes returns the chained hashes of the prompt's full blocks, up to MaxBlocks, appended to dst.
func (ix *Indexer) Hashes(dst []uint64, model, prompt string) []uint64 {
	prev := xxh64(0, model)
	n := min(len(prompt)/ix.opts.BlockSize, ix.opts.MaxBlocks)
	dst = slices.Grow(dst, n)
	for i := 0; i < n; i++ {
		prev = xxh64(prev, prompt[i*ix.opts.BlockSize:(i+1)*ix.opts.BlockSize])
		dst = append(dst, prev)
	}
	return dst
}

// Match calls hit(endpoint, n) for every endpoint that holds the first n ≥ 1 blocks of the chain
// (and not block n+1).
func (ix *Indexer) Match(hashes []uint64, hit func(endpoint string, blocks int)) {
	if len(hashes) == 0 {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	alive := append([]string(nil), ix.blocks[hashes[0]]...)
	for i := 1; i < len(hashes) && len(alive) > 0; i++ {
		next := ix.blocks[hashes[i]]
		kept := alive[:0]
		for _, e := range alive {
			if contains(next, e) {
				kept = append(kept, e)
			} else {
				hit(e, i)
			}
		}
		alive = kept
	}
	for _, e := range alive {
		hit(e, len(hashes))
	}
}

// Add records that endpoint served a prompt with these block hashes, then tells the observer of
// those the other replicas need to hear of (in the prompt's order), if any.
func (ix *Indexer) Add(endpoint string, hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	r := ix.observer.Load()
	if r == nil {
		ix.add(endpoint, hashes, true, nil)
		return
	}
	buf := toldBufs.Get().(*[]uint64)
	tell := ix.add(endpoint, hashes, true, (*buf)[:0])
	if len(tell) > 0 {
		r.o.Added(endpoint, tell)
	}
	*buf = tell[:0]
	toldBufs.Put(buf)
}

// toldBufs hold the blocks Add tells the observer of.
var toldBufs = sync.Pool{New: func() any { return new([]uint64) }}

// AddReplicated records that endpoint served a prompt with these block hashes, as another
// replica's Add saw it; the observer is not told.
func (ix *Indexer) AddReplicated(endpoint string, hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	ix.add(endpoint, hashes, false, nil)
}

// add records the blocks; for a local pick it appends to tell those to tell the observer of.
func (ix *Indexer) add(endpoint string, hashes []uint64, local bool, tell []uint64) []uint64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	l := ix.endpoints[endpoint]
	if l == nil {
		l = &endpointLRU{order: list.New(), items: map[uint64]*list.Element{}}
		ix.endpoints[endpoint] = l
	}
	resend := uint64(ix.opts.ResendAfter)
	for _, h := range hashes {
		if el, ok := l.items[h]; ok {
			l.order.MoveToFront(el)
			e := el.Value.(*entry)
			if !local || l.inserts-e.told >= resend {
				e.told = l.inserts
				if local {
					tell = append(tell, h)
				}
			}
			continue
		}
		l.inserts++
		l.items[h] = l.order.PushFront(&entry{hash: h, told: l.inserts})
		if local {
			tell = append(tell, h)
		}
		ix.blocks[h] = append(ix.blocks[h], endpoint)
		for l.order.Len() > ix.opts.CapacityPerEndpoint {
			old := l.order.Back()
			l.order.Remove(old)
			oh := old.Value.(*entry).hash
			delete(l.items, oh)
			ix.dropBlock(oh, endpoint)
		}
	}
	return tell
}

// Forget drops everything an endpoint served (it left the pool).
func (ix *Indexer) Forget(endpoint string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	l := ix.endpoints[endpoint]
	if l == nil {
		return
	}
	for h := range l.items {
		ix.dropBlock(h, endpoint)
	}
	delete(ix.endpoints, endpoint)
}

// Blocks returns how many blocks are remembered for an endpoint.
func (ix *Indexer) Blocks(endpoint string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if l := ix.endpoints[endpoint]; l != nil {
		return l.order.Len()
	}
	return 0
}

func (ix *Indexer) dropBlock(h uint64, endpoint string) {
	eps := ix.blocks[h]
	for i, e := range eps {
		if e == endpoint {
			eps[i] = eps[len(eps)-1]
			eps = eps[:len(eps)-1]
			break
		}
	}
	if len(eps) == 0 {
		delete(ix.blocks, h)
	} else {
		ix.blocks[h] = eps
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Held is the block hashes an endpoint holds, least recently used first.
type Held struct {
	Endpoint string
	Hashes   []uint64
}

// Snapshot returns the most recent blocks of every endpoint, at most maxBlocks in all (shared
// evenly between the endpoints), each endpoint's least recent first: AddReplicated of each in
// turn rebuilds the same LRU order. It copies under the lock, so it is for rare uses (a replica
// joining), not the request path.
func (ix *Indexer) Snapshot(maxBlocks int) []Held {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if len(ix.endpoints) == 0 || maxBlocks <= 0 {
		return nil
	}
	per := max(maxBlocks/len(ix.endpoints), 1)
	out := make([]Held, 0, len(ix.endpoints))
	for ep, l := range ix.endpoints {
		n := min(per, l.order.Len())
		if n == 0 {
			continue
		}
		hs := make([]uint64, n)
		el := l.order.Front()
		for i := n - 1; i >= 0; i-- {
			hs[i] = el.Value.(*entry).hash
			el = el.Next()
		}
		out = append(out, Held{Endpoint: ep, Hashes: hs})
	}
	slices.SortFunc(out, func(a, b Held) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out
}
