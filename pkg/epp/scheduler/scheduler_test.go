package scheduler

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func eps(ms ...modelmetrics.Metrics) []Endpoint {
	out := make([]Endpoint, len(ms))
	for i, m := range ms {
		out[i] = Endpoint{Address: fmt.Sprintf("10.0.0.%d:8000", i+1), Metrics: m}
	}
	return out
}

func only(t *testing.T, name string) *Scheduler {
	t.Helper()
	s, err := New(Options{Weights: map[string]float64{name: 1}, Fallbacks: 2})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScorers(t *testing.T) {
	tests := []struct {
		name   string
		scorer string
		req    Request
		eps    []Endpoint
		want   string
	}{
		{"shortest queue", QueueScorer, Request{Model: "m"},
			eps(modelmetrics.Metrics{WaitingQueue: 4}, modelmetrics.Metrics{WaitingQueue: 0}, modelmetrics.Metrics{WaitingQueue: 9}), "10.0.0.2:8000"},
		{"most free KV-cache", KVCacheScorer, Request{Model: "m"},
			eps(modelmetrics.Metrics{KVCacheUsage: 0.5}, modelmetrics.Metrics{KVCacheUsage: 0.9}, modelmetrics.Metrics{KVCacheUsage: 0.1}), "10.0.0.3:8000"},
		{"adapter running", LoRAScorer, Request{Model: "sql", LoRA: true},
			eps(modelmetrics.Metrics{MaxLoRAs: 2}, modelmetrics.Metrics{MaxLoRAs: 2, WaitingLoRAs: []string{"sql"}}, modelmetrics.Metrics{MaxLoRAs: 2, ActiveLoRAs: []string{"sql"}}), "10.0.0.3:8000"},
		{"a free slot beats waiting behind full slots", LoRAScorer, Request{Model: "sql", LoRA: true},
			eps(modelmetrics.Metrics{MaxLoRAs: 1, WaitingLoRAs: []string{"sql"}}, modelmetrics.Metrics{MaxLoRAs: 2}), "10.0.0.2:8000"},
		{"waiting beats no slot", LoRAScorer, Request{Model: "sql", LoRA: true},
			eps(modelmetrics.Metrics{MaxLoRAs: 1, ActiveLoRAs: []string{"x"}}, modelmetrics.Metrics{MaxLoRAs: 1, WaitingLoRAs: []string{"sql"}}), "10.0.0.2:8000"},
		{"free slot beats full slots", LoRAScorer, Request{Model: "sql", LoRA: true},
			eps(modelmetrics.Metrics{MaxLoRAs: 1, ActiveLoRAs: []string{"x"}}, modelmetrics.Metrics{MaxLoRAs: 2, ActiveLoRAs: []string{"x"}}), "10.0.0.2:8000"},
		{"least busy GPUs, unknown in the middle", GPUScorer, Request{Model: "m"}, withGPU(eps(modelmetrics.Metrics{}, modelmetrics.Metrics{}, modelmetrics.Metrics{}), 0.9, -1, 0.2), "10.0.0.3:8000"},
		{"unknown GPUs over busy ones", GPUScorer, Request{Model: "m"}, withGPU(eps(modelmetrics.Metrics{}, modelmetrics.Metrics{}), 0.9, -1), "10.0.0.2:8000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := only(t, tt.scorer)
			for range 20 { // no randomness may change a strict winner
				req := tt.req
				if got := s.Pick(&req, tt.eps); got[0] != tt.want {
					t.Fatalf("picked %v, want %s first", got, tt.want)
				}
				if i := req.Chosen(); i < 0 || tt.eps[i].Address != tt.want {
					t.Fatalf("Chosen() = %d, want the index of %s", i, tt.want)
				}
			}
		})
	}
}

func TestPrefixAffinity(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := eps(modelmetrics.Metrics{}, modelmetrics.Metrics{}, modelmetrics.Metrics{}, modelmetrics.Metrics{})
	shared := strings.Repeat("You are a helpful assistant for the billing team. ", 40)
	first := s.Pick(&Request{Model: "m", Prompt: shared + "question one"}, pool)[0]
	for i := range 20 {
		got := s.Pick(&Request{Model: "m", Prompt: shared + fmt.Sprintf("question %d", i)}, pool)[0]
		if got != first {
			t.Fatalf("request %d with the shared prefix went to %s, not %s which holds it", i, got, first)
		}
	}
	// Load still wins over affinity when the holder is saturated: the prefix weight (3) is less
	// than queue + KV (2 + 2) at their extremes.
	for i := range pool {
		if pool[i].Address == first {
			pool[i].Metrics = modelmetrics.Metrics{WaitingQueue: 10, KVCacheUsage: 0.95}
		}
	}
	if got := s.Pick(&Request{Model: "m", Prompt: shared + "late"}, pool)[0]; got == first {
		t.Fatalf("a saturated prefix holder was still picked")
	}
}

// TestSaturatedRankLast: with two endpoints the queue scorer cannot outweigh prefix affinity
// (2 < 3), so the scores alone keep a prefix holder with a deep queue; marked saturated, it
// follows every endpoint with headroom; with all saturated the scores decide again.
func TestSaturatedRankLast(t *testing.T) {
	s, err := New(Options{Fallbacks: 1})
	if err != nil {
		t.Fatal(err)
	}
	pool := eps(modelmetrics.Metrics{KVCacheUsage: 0.03}, modelmetrics.Metrics{KVCacheUsage: 0.03})
	shared := strings.Repeat("You are a helpful assistant for the billing team. ", 40)
	holder := s.Pick(&Request{Model: "m", Prompt: shared + "first"}, pool)[0]
	other := pool[0].Address
	for i := range pool {
		if pool[i].Address == holder {
			pool[i].Metrics.WaitingQueue = 179
		} else {
			pool[i].Metrics.WaitingQueue = 4
			other = pool[i].Address
		}
	}
	if got := s.Pick(&Request{Model: "m", Prompt: shared + "scores alone"}, pool); got[0] != holder {
		t.Fatalf("by score alone picked %v, want the prefix holder %s first (GIE's weights)", got, holder)
	}
	for i := range pool {
		pool[i].Saturated = pool[i].Address == holder
	}
	for i := range 20 {
		got := s.Pick(&Request{Model: "m", Prompt: shared + fmt.Sprintf("question %d", i)}, pool)
		if len(got) != 2 || got[0] != other || got[1] != holder {
			t.Fatalf("holder saturated: picked %v, want %s then %s as the fallback", got, other, holder)
		}
	}
	// Both hold the prefix now; with all saturated the scores decide again, and the same way as
	// with none saturated.
	for _, sat := range []bool{false, true, false} {
		for i := range pool {
			pool[i].Saturated = sat
		}
		if got := s.Pick(&Request{Model: "m", Prompt: shared + "all alike"}, pool); got[0] != other {
			t.Fatalf("all saturated=%v: picked %v, want %s (shared prefix, shorter queue)", sat, got, other)
		}
	}
}

func TestTieBreakIsRandomAndFallbacksAreDistinct(t *testing.T) {
	s, err := New(Options{Fallbacks: 2})
	if err != nil {
		t.Fatal(err)
	}
	pool := eps(modelmetrics.Metrics{}, modelmetrics.Metrics{}, modelmetrics.Metrics{}, modelmetrics.Metrics{WaitingQueue: 3})
	seen := map[string]int{}
	for range 300 {
		got := s.Pick(&Request{Model: "m"}, pool)
		if len(got) != 3 || got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
			t.Fatalf("pick %v: want 3 distinct endpoints", got)
		}
		if got[0] == "10.0.0.4:8000" {
			t.Fatalf("the busiest endpoint was picked first: %v", got)
		}
		seen[got[0]]++
	}
	for _, e := range pool[:3] {
		if seen[e.Address] < 50 {
			t.Fatalf("equal endpoints picked unevenly: %v", seen)
		}
	}
	if got := s.Pick(&Request{Model: "m"}, pool[:1]); len(got) != 1 {
		t.Fatalf("one endpoint: %v", got)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Options{Weights: map[string]float64{"random-scorer": 1}}); err == nil || !strings.Contains(err.Error(), `unknown scorer "random-scorer"`) {
		t.Fatalf("unknown scorer: %v", err)
	}
	if _, err := New(Options{Weights: map[string]float64{QueueScorer: -1}}); err == nil {
		t.Fatal("negative weight accepted")
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			s, err := New(Options{Fallbacks: 2})
			if err != nil {
				b.Fatal(err)
			}
			pool := make([]Endpoint, n)
			for i := range pool {
				pool[i] = Endpoint{Address: fmt.Sprintf("10.%d.%d.%d:8000", i>>16, (i>>8)&255, i&255),
					Metrics: modelmetrics.Metrics{WaitingQueue: i % 7, KVCacheUsage: float64(i%10) / 10}}
			}
			prompts := make([]string, 16)
			for i := range prompts {
				prompts[i] = strings.Repeat(fmt.Sprintf("shared system prompt %d. ", i%4), 40) + fmt.Sprintf("user question %d", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Pick(&Request{Model: "m", Prompt: prompts[i%len(prompts)]}, pool)
			}
		})
	}
}

// withGPU gives the endpoints GPU utilisations in turn; a negative one leaves it unknown.
func withGPU(es []Endpoint, utils ...float64) []Endpoint {
	for i, u := range utils {
		if u >= 0 {
			es[i].GPUUtilization, es[i].HasGPU = u, true
		}
	}
	return es
}

// TestPrefixBoost: a busy prefix holder with headroom loses to an idle endpoint on GIE's
// weights, and wins when the request's prefix weight is boosted (a request spilled here for its
// cached prefix); a saturated holder still follows the endpoints with headroom.
func TestPrefixBoost(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	shared := strings.Repeat("A long shared document that a region holds in its cache. ", 40)
	pool := eps(modelmetrics.Metrics{}, modelmetrics.Metrics{})
	holder := s.Pick(&Request{Model: "m", Prompt: shared + "first"}, pool)[0]
	other := pool[0].Address
	for i := range pool {
		if pool[i].Address == holder {
			pool[i].Metrics = modelmetrics.Metrics{WaitingQueue: 5, KVCacheUsage: 0.9}
		} else {
			other = pool[i].Address
		}
	}
	// Boosted first: a pick records the prefix at the endpoint it picks.
	if got := s.Pick(&Request{Model: "m", Prompt: shared + "spilled", PrefixBoost: 4}, pool)[0]; got != holder {
		t.Fatalf("with a boost: %s, want the holder %s", got, holder)
	}
	if got := s.Pick(&Request{Model: "m", Prompt: shared + "plain"}, pool)[0]; got != other {
		t.Fatalf("without a boost: %s, want the idle %s", got, other)
	}
	for i := range pool {
		if pool[i].Address == holder {
			pool[i].Saturated = true
		}
	}
	if got := s.Pick(&Request{Model: "m", Prompt: shared + "spilled again", PrefixBoost: 4}, pool)[0]; got != other {
		t.Fatalf("a saturated holder with a boost: %s, want %s", got, other)
	}
}

// TestChosenWithoutCandidates: a Pick without candidates chooses none, whatever the request's
// earlier Pick chose.
func TestChosenWithoutCandidates(t *testing.T) {
	s := only(t, QueueScorer)
	req := Request{Model: "m"}
	s.Pick(&req, eps(modelmetrics.Metrics{}))
	if req.Chosen() != 0 {
		t.Fatalf("Chosen() = %d after a pick among one, want 0", req.Chosen())
	}
	if got := s.Pick(&req, nil); got != nil || req.Chosen() != -1 {
		t.Fatalf("Pick among none = %v, Chosen() = %d; want nil, -1", got, req.Chosen())
	}
}
