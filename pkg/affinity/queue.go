package affinity

import "sync"

// record is one block hash a local pick recorded for an endpoint.
type record struct {
	endpoint string
	hash     uint64
}

// queue is a bounded ring of records waiting to be sent: a push into a full queue drops the
// oldest record (an old hint is worth less than a new one). Pushing allocates nothing.
type queue struct {
	mu      sync.Mutex
	recs    []record
	head, n int
}

func newQueue(capacity int) *queue { return &queue{recs: make([]record, capacity)} }

// push appends a record per hash and returns how many older records it dropped and whether the
// queue was empty before.
func (q *queue) push(endpoint string, hashes []uint64) (dropped int, wasEmpty bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	wasEmpty = q.n == 0
	c := len(q.recs)
	if len(hashes) > c { // more than the whole queue: only the newest fit
		dropped += len(hashes) - c
		hashes = hashes[len(hashes)-c:]
	}
	for _, h := range hashes {
		if q.n == c {
			q.recs[q.head] = record{}
			q.head = (q.head + 1) % c
			q.n--
			dropped++
		}
		q.recs[(q.head+q.n)%c] = record{endpoint: endpoint, hash: h}
		q.n++
	}
	return dropped, wasEmpty
}

// pop moves up to len(dst) of the oldest records into dst and returns how many.
func (q *queue) pop(dst []record) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := min(len(dst), q.n)
	c := len(q.recs)
	for i := range k {
		j := (q.head + i) % c
		dst[i] = q.recs[j]
		q.recs[j] = record{}
	}
	q.head = (q.head + k) % c
	q.n -= k
	return k
}
