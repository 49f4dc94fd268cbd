package scale

import (
	"sync/atomic"
	"time"
)

// histMax is the largest latency a histogram tells apart; anything slower counts in its last
// bucket.
const histMax = 30 * time.Second

// histStep is a histogram's resolution.
const histStep = 100 * time.Microsecond

// hist counts latencies in fixed buckets of histStep up to histMax, without locks: the
// simulated spokes record hundreds of thousands of samples a second into one.
type hist struct {
	buckets [histMax / histStep]atomic.Int64
	n       atomic.Int64
}

func (h *hist) record(d time.Duration) {
	i := int(d / histStep)
	switch {
	case i < 0:
		i = 0 // the report's clock and the receipt's are one monotonic clock; negative is rounding
	case i >= len(h.buckets):
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
	h.n.Add(1)
}

func (h *hist) reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
	h.n.Store(0)
}

func (h *hist) count() int64 { return h.n.Load() }

// quantile returns the latency below which a fraction q of the samples lie, at the upper edge
// of its bucket; 0 without samples.
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	want := int64(q * float64(n))
	if want >= n {
		want = n - 1
	}
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen > want {
			return time.Duration(i+1) * histStep
		}
	}
	return histMax
}
