// Package loadgen is an open-loop load generator for inference gateways: requests arrive at a
// fixed mean rate (Poisson arrivals) whatever the latency, with a mix of InferenceObjectives, shared
// prompt prefixes and streaming, and every request's outcome is recorded: status, the endpoint and
// region that served it, time to first token and latency.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Class is one kind of traffic in the mix.
type Class struct {
	// Name labels results (e.g. Critical).
	Name string
	// Objective is sent as x-gateway-inference-objective; empty sends none.
	Objective string
	// Share of the arrivals, relative to the other classes.
	Share float64
}

// Options describe the load.
type Options struct {
	// Target is the gateway's base URL, e.g. http://127.0.1.1:8080. Targets, when set, are used
	// in turn instead (round-robin across gateways).
	Target  string
	Targets []string
	// Rate is the mean arrival rate in requests per second.
	Rate     float64
	Duration time.Duration
	Classes  []Class
	Model    string
	// Prefixes is the number of distinct shared system prompts (or long shared contexts),
	// PrefixBytes their length.
	Prefixes    int
	PrefixBytes int
	// HomePrefixes, when set, are the prefixes [from, to) this load uses HomeShare of the time
	// (the contexts at home in its region); the rest of the time it uses any prefix.
	HomePrefixes [2]int
	HomeShare    float64
	MaxTokens    int
	// StreamShare is the fraction of streamed requests.
	StreamShare float64
	// MaxInFlight bounds concurrent requests; arrivals beyond it are recorded as not sent.
	MaxInFlight int
	// Timeout bounds one request.
	Timeout time.Duration
	// Headers are added to every request.
	Headers map[string]string
	// Seed, when not zero, fixes the arrivals, classes, streaming and prompts: two runs with the
	// same seed and options send the same requests at the same offsets from their start.
	Seed uint64
	// Requests, when set, ends the run after that many arrivals (or at Duration, if sooner).
	Requests int
}

// Result is one request's outcome.
type Result struct {
	Start   time.Time     `json:"start"`
	Class   string        `json:"class"`
	Status  int           `json:"status"` // 0 when no HTTP answer
	Served  string        `json:"served,omitempty"`
	Target  string        `json:"target"`
	TTFT    time.Duration `json:"ttft"`
	Latency time.Duration `json:"latency"`
	Err     string        `json:"err,omitempty"`
	Stream  bool          `json:"stream"`
	// Prefix is the shared prefix the prompt began with; PromptTokens and CachedTokens the
	// response's usage (prompt tokens, and those found in the prefix cache), when it had one.
	Prefix       int `json:"prefix"`
	PromptTokens int `json:"prompt_tokens,omitempty"`
	CachedTokens int `json:"cached_tokens,omitempty"`
	// CompletionTokens is the response's usage of output tokens, when it had one.
	CompletionTokens int `json:"completion_tokens,omitempty"`
}

// OK reports whether the request succeeded.
func (r Result) OK() bool { return r.Status == http.StatusOK && r.Err == "" }

// Run sends load until Duration passes or ctx ends, then waits for requests in flight.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if o.Rate <= 0 || o.Duration <= 0 || len(o.Classes) == 0 {
		return nil, errors.New("loadgen: rate, duration and at least one class are required")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 1024
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Prefixes <= 0 {
		o.Prefixes = 1
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: o.MaxInFlight,
		IdleConnTimeout:     30 * time.Second,
	}}
	defer client.CloseIdleConnections()
	prefixes := make([]string, o.Prefixes)
	for i := range prefixes {
		unit := fmt.Sprintf("System prompt %d: answer as the %d-th assistant would. ", i, i)
		prefixes[i] = strings.Repeat(unit, 1+o.PrefixBytes/len(unit))[:o.PrefixBytes]
	}
	var total float64
	for _, c := range o.Classes {
		total += c.Share
	}
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	var mu sync.Mutex
	var results []Result
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.MaxInFlight)
	record := func(r Result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}
	finish := func() ([]Result, error) {
		wg.Wait()
		slices.SortFunc(results, func(a, b Result) int { return a.Start.Compare(b.Start) })
		return results, nil
	}
	next := time.Now()
	for n := 0; o.Requests <= 0 || n < o.Requests; n++ {
		next = next.Add(time.Duration(rng.ExpFloat64() / o.Rate * float64(time.Second)))
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return finish()
		case <-t.C:
		}
		class := pick(rng, o.Classes, total)
		target := o.Target
		if len(o.Targets) > 0 {
			target = o.Targets[n%len(o.Targets)]
		}
		stream := rng.Float64() < o.StreamShare
		px := rng.IntN(len(prefixes))
		if home := o.HomePrefixes; home[1] > home[0] && rng.Float64() < o.HomeShare {
			px = home[0] + rng.IntN(home[1]-home[0])
		}
		prompt := prefixes[px] + fmt.Sprintf(" Question %d: what is %d + %d?", n, n, n)
		select {
		case sem <- struct{}{}:
		default:
			record(Result{Start: time.Now(), Class: class.Name, Err: "not sent: too many requests in flight", Stream: stream})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := send(client, o, target, class, prompt, stream)
			r.Prefix = px
			record(r)
		}()
	}
	return finish()
}

func pick(rng *rand.Rand, cs []Class, total float64) Class {
	x := rng.Float64() * total
	for _, c := range cs {
		if x < c.Share {
			return c
		}
		x -= c.Share
	}
	return cs[len(cs)-1]
}

func send(client *http.Client, o Options, target string, c Class, prompt string, stream bool) Result {
	res := Result{Start: time.Now(), Class: c.Name, Stream: stream, Target: target}
	body := map[string]any{"model": o.Model, "prompt": prompt, "max_tokens": o.MaxTokens, "stream": stream}
	if stream {
		body["stream_options"] = map[string]any{"include_usage": true}
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"/v1/completions", bytes.NewReader(b))
	if err != nil {
		res.Err = err.Error()
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Objective != "" {
		req.Header.Set("x-gateway-inference-objective", c.Objective)
	}
	for k, v := range o.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		res.Err = err.Error()
		res.Latency = time.Since(res.Start)
		return res
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.Served = resp.Header.Get("x-gateway-destination-endpoint-served")
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(1); err == nil {
		res.TTFT = time.Since(res.Start)
	}
	var got bytes.Buffer
	if _, err := io.Copy(&got, io.LimitReader(br, maxResponseBytes)); err != nil {
		res.Err = err.Error()
	}
	_, _ = io.Copy(io.Discard, br)
	res.Latency = time.Since(res.Start)
	res.PromptTokens, res.CachedTokens, res.CompletionTokens = usageOf(got.Bytes(), stream)
	return res
}

// maxResponseBytes bounds the part of a response read for its usage.
const maxResponseBytes = 1 << 20

// usageOf reads the usage of a response body: the object's, or the last streamed event's that
// has one.
func usageOf(body []byte, stream bool) (prompt, cached, completion int) {
	var v struct {
		Usage *struct {
			PromptTokens        int `json:"prompt_tokens"`
			CompletionTokens    int `json:"completion_tokens"`
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if !stream {
		if json.Unmarshal(body, &v) == nil && v.Usage != nil {
			return v.Usage.PromptTokens, v.Usage.PromptTokensDetails.CachedTokens, v.Usage.CompletionTokens
		}
		return 0, 0, 0
	}
	for _, line := range bytes.Split(body, []byte("\n")) {
		data, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:"))
		v.Usage = nil
		if ok && json.Unmarshal(bytes.TrimSpace(data), &v) == nil && v.Usage != nil {
			prompt, cached, completion = v.Usage.PromptTokens, v.Usage.PromptTokensDetails.CachedTokens, v.Usage.CompletionTokens
		}
	}
	return prompt, cached, completion
}

// ClassSummary aggregates one class's results. A streamed response's first byte is its first
// token; a response that is not streamed arrives whole, so its first byte says nothing of the
// first token. The two are kept apart: time to first token of the streamed requests, and the
// whole-response time of the others.
type ClassSummary struct {
	Class     string         `json:"class"`
	Requests  int            `json:"requests"`
	Succeeded int            `json:"succeeded"`
	Statuses  map[string]int `json:"statuses"`
	// Streamed counts the succeeded streamed requests, which the TTFT percentiles cover.
	Streamed int     `json:"streamed"`
	TTFTp50  float64 `json:"ttft_p50_ms"`
	TTFTp99  float64 `json:"ttft_p99_ms"`
	// Whole counts the succeeded requests that were not streamed, which the response-time
	// percentiles cover.
	Whole       int            `json:"whole"`
	Responsep50 float64        `json:"response_p50_ms"`
	Responsep99 float64        `json:"response_p99_ms"`
	Served      map[string]int `json:"served"`
}

// Summarize aggregates results by class; served maps endpoint → requests.
func Summarize(rs []Result) []ClassSummary {
	by := map[string][]Result{}
	for _, r := range rs {
		by[r.Class] = append(by[r.Class], r)
	}
	var out []ClassSummary
	for class, list := range by {
		s := ClassSummary{Class: class, Requests: len(list), Statuses: map[string]int{}, Served: map[string]int{}}
		var ttft, whole []time.Duration
		for _, r := range list {
			key := fmt.Sprint(r.Status)
			if r.Status == 0 {
				key = "error"
			}
			s.Statuses[key]++
			if !r.OK() {
				continue
			}
			s.Succeeded++
			s.Served[r.Served]++
			if r.Stream {
				ttft = append(ttft, r.TTFT)
			} else {
				whole = append(whole, r.Latency)
			}
		}
		s.Streamed, s.Whole = len(ttft), len(whole)
		s.TTFTp50, s.TTFTp99 = Percentile(ttft, 0.5), Percentile(ttft, 0.99)
		s.Responsep50, s.Responsep99 = Percentile(whole, 0.5), Percentile(whole, 0.99)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b ClassSummary) int { return strings.Compare(a.Class, b.Class) })
	return out
}

// Percentile returns the q-quantile of ds in milliseconds (nearest rank), 0 for none.
func Percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}
