package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestSeedRepeatsTheRequests: two runs with one seed send the same requests in the same order
// (what a side-by-side comparison of two routers needs), Requests bounds the run, and another
// seed sends other requests.
func TestSeedRepeatsTheRequests(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Prompt string `json:"prompt"`
			Stream bool   `json:"stream"`
		}
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		got = append(got, r.Header.Get("x-gateway-inference-objective")+"|"+b.Prompt+"|"+map[bool]string{true: "stream"}[b.Stream])
		mu.Unlock()
	}))
	defer srv.Close()
	run := func(seed uint64) []string {
		mu.Lock()
		got = nil
		mu.Unlock()
		rs, err := Run(context.Background(), Options{
			Target: srv.URL, Rate: 1000, Duration: 10 * time.Second, Seed: seed, Requests: 40,
			Classes:  []Class{{Name: "a", Objective: "a", Share: 1}, {Name: "b", Objective: "b", Share: 1}},
			Prefixes: 4, PrefixBytes: 32, StreamShare: 0.5,
		})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(rs) != 40 {
			t.Fatalf("%d results, want 40", len(rs))
		}
		for _, r := range rs {
			if !r.OK() {
				t.Fatalf("request failed: %+v", r)
			}
		}
		if len(got) != 40 {
			t.Fatalf("the server saw %d requests, want 40", len(got))
		}
		// Requests in flight reach the server in any order; each carries its arrival number.
		out := slices.Clone(got)
		slices.Sort(out)
		return out
	}
	a, b := run(7), run(7)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different requests:\n%q\n%q", a, b)
	}
	if c := run(8); slices.Equal(a, c) {
		t.Fatal("another seed sent the same requests")
	}
}

// TestSummaryKeepsStreamedAndWholeApart: the time to first token covers streamed requests only,
// and the whole-response time the others, so a class whose responses arrive whole does not look
// slower to its first token than a streamed one.
func TestSummaryKeepsStreamedAndWholeApart(t *testing.T) {
	ms := time.Millisecond
	rs := []Result{
		{Class: "a", Status: 200, Stream: true, TTFT: 10 * ms, Latency: 900 * ms},
		{Class: "a", Status: 200, Stream: true, TTFT: 30 * ms, Latency: 1000 * ms},
		{Class: "a", Status: 200, Stream: false, TTFT: 800 * ms, Latency: 800 * ms},
		{Class: "a", Status: 429},
		{Class: "b", Status: 200, Stream: false, TTFT: 500 * ms, Latency: 500 * ms},
	}
	got := Summarize(rs)
	if len(got) != 2 {
		t.Fatalf("%d classes, want 2", len(got))
	}
	a, b := got[0], got[1]
	if a.Requests != 4 || a.Succeeded != 3 || a.Streamed != 2 || a.Whole != 1 || a.Statuses["429"] != 1 {
		t.Errorf("class a counts: %+v", a)
	}
	if a.TTFTp50 != 10 || a.TTFTp99 != 30 {
		t.Errorf("class a TTFT p50/p99 = %v/%v ms, want 10/30 (streamed requests only)", a.TTFTp50, a.TTFTp99)
	}
	if a.Responsep50 != 800 || a.Responsep99 != 800 {
		t.Errorf("class a response p50/p99 = %v/%v ms, want 800/800 (requests not streamed only)", a.Responsep50, a.Responsep99)
	}
	if b.Streamed != 0 || b.TTFTp50 != 0 || b.Responsep50 != 500 {
		t.Errorf("class b: %+v: no streamed request, so no TTFT; a whole response of 500 ms", b)
	}
}

// TestUsageOf: the usage of a whole response and of a stream's last event that has one.
func TestUsageOf(t *testing.T) {
	whole := `{"choices":[],"usage":{"prompt_tokens":3000,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2992}}}`
	if p, c, o := usageOf([]byte(whole), false); p != 3000 || c != 2992 || o != 4 {
		t.Fatalf("whole: %d prompt, %d cached, %d completion", p, c, o)
	}
	stream := "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\ndata: [DONE]\n\n"
	if p, c, o := usageOf([]byte(stream), true); p != 10 || c != 8 || o != 2 {
		t.Fatalf("stream: %d prompt, %d cached, %d completion", p, c, o)
	}
	if p, c, o := usageOf([]byte("not json"), false); p != 0 || c != 0 || o != 0 {
		t.Fatalf("garbage: %d prompt, %d cached, %d completion", p, c, o)
	}
}
