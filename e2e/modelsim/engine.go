// Package modelsim is a vLLM-compatible model-server simulator: the OpenAI completions and chat
// completions API (streaming and not, with token usage), /v1/models, and a /metrics page with
// vLLM's metric names and the size and shape of a real vLLM page, whose values follow the
// simulated load.
//
// The load model: at most MaxNumSeqs sequences run at once and the rest wait in FIFO order. A
// sequence's time to first token is its prefill, (prompt tokens not found in the prefix cache) ÷
// PrefillTokensPerSecond, plus PrefillOverhead; each next token takes DecodeLatency plus
// DecodeLatencyPerSeq for every other running sequence. Running sequences hold KV-cache blocks for
// their prompt and generated tokens; finished prompts stay in an LRU prefix cache of block hashes
// (as vLLM's automatic prefix caching), so a repeated prefix skips most of its prefill. A request
// for a LoRA adapter loads it into one of MaxLoRAs slots (evicting the least recently used
// adapter), costing LoRALoadLatency.
//
// One process serves many endpoints (Server per address), so hundreds of simulated model servers
// run on one small machine.
package modelsim

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// Config is one simulated model server.
type Config struct {
	// Model is the served base model name.
	Model string
	// LoRAs are the adapters the server can load.
	LoRAs []string
	// MaxLoRAs is how many adapters fit at once (vLLM --max-loras).
	MaxLoRAs int
	// MaxNumSeqs is how many sequences run at once (vLLM --max-num-seqs).
	MaxNumSeqs int
	// BlockSize is the KV-cache block size in tokens; NumGPUBlocks the number of blocks.
	BlockSize    int
	NumGPUBlocks int
	// PrefillTokensPerSecond is the prefill speed; PrefillOverhead a fixed cost per request.
	PrefillTokensPerSecond float64
	PrefillOverhead        time.Duration
	// DecodeLatency is the time per output token with one running sequence; DecodeLatencyPerSeq
	// is added per other running sequence.
	DecodeLatency       time.Duration
	DecodeLatencyPerSeq time.Duration
	// LoRALoadLatency is the cost of loading an adapter.
	LoRALoadLatency time.Duration
	// DefaultMaxTokens is the output length when a request sets none.
	DefaultMaxTokens int
	// MaxModelLen bounds prompt plus output tokens.
	MaxModelLen int
}

// DefaultConfig returns a small model server: 8 sequences, 2048 blocks of 16 tokens, 8000 prefill
// tokens/s, 10 ms per token plus 1 ms per other running sequence.
func DefaultConfig() Config {
	return Config{
		Model:                  "meta-llama/Llama-3.1-8B-Instruct",
		MaxLoRAs:               4,
		MaxNumSeqs:             8,
		BlockSize:              16,
		NumGPUBlocks:           2048,
		PrefillTokensPerSecond: 8000,
		PrefillOverhead:        2 * time.Millisecond,
		DecodeLatency:          10 * time.Millisecond,
		DecodeLatencyPerSeq:    time.Millisecond,
		LoRALoadLatency:        20 * time.Millisecond,
		DefaultMaxTokens:       16,
		MaxModelLen:            8192,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Model == "" {
		errs = append(errs, errors.New("model must not be empty"))
	}
	if c.MaxNumSeqs < 1 {
		errs = append(errs, fmt.Errorf("max-num-seqs %d: at least 1", c.MaxNumSeqs))
	}
	if c.BlockSize < 1 || c.NumGPUBlocks < 1 {
		errs = append(errs, fmt.Errorf("block size %d and GPU blocks %d: at least 1", c.BlockSize, c.NumGPUBlocks))
	}
	if c.PrefillTokensPerSecond <= 0 {
		errs = append(errs, fmt.Errorf("prefill rate %v: must be positive", c.PrefillTokensPerSecond))
	}
	if c.DefaultMaxTokens < 1 || c.MaxModelLen < 2 {
		errs = append(errs, fmt.Errorf("default max tokens %d and max model len %d: too small", c.DefaultMaxTokens, c.MaxModelLen))
	}
	if len(c.LoRAs) > 0 && c.MaxLoRAs < 1 {
		errs = append(errs, fmt.Errorf("max-loras %d: at least 1 when adapters are configured", c.MaxLoRAs))
	}
	return errors.Join(errs...)
}

// Errors of Generate.
var (
	ErrUnknownModel  = errors.New("model does not exist")
	ErrPromptTooLong = errors.New("prompt too long")
)

// Engine simulates one model server's scheduler and caches.
type Engine struct {
	cfg     Config
	seed    maphash.Seed
	metrics *engineMetrics
	now     func() time.Time

	mu         sync.Mutex
	running    int
	waiting    *list.List // of *waiter, FIFO
	usedBlocks int
	prefix     *lru
	loras      *lru // loaded adapters
	runLoRA    map[string]int
	waitLoRA   map[string]int
	loraUpdate time.Time
}

type waiter struct {
	ready chan struct{}
	lora  string
}

// NewEngine returns an idle engine.
func NewEngine(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:        cfg,
		seed:       maphash.MakeSeed(),
		now:        time.Now,
		waiting:    list.New(),
		prefix:     newLRU(cfg.NumGPUBlocks),
		loras:      newLRU(max(cfg.MaxLoRAs, 1)),
		runLoRA:    map[string]int{},
		waitLoRA:   map[string]int{},
		loraUpdate: time.Now(),
	}
	e.metrics = newEngineMetrics(e)
	return e, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() Config { return e.cfg }

// Models returns the base model and its adapters.
func (e *Engine) Models() []string { return append([]string{e.cfg.Model}, e.cfg.LoRAs...) }

// Request is one generation.
type Request struct {
	Model     string
	Prompt    string
	MaxTokens int
}

// Token is one generated token, delivered as it is produced.
type Token struct {
	Text string
}

// Result summarises a finished generation.
type Result struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int
	FinishReason     string
	QueueTime        time.Duration
	TTFT             time.Duration
}

// Stats is the engine's current load, as its /metrics page shows it.
type Stats struct {
	Running      int
	Waiting      int
	KVCacheUsage float64
	RunningLoRAs []string
	WaitingLoRAs []string
}

// Stats returns the current load.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Running:      e.running,
		Waiting:      e.waiting.Len(),
		KVCacheUsage: min(float64(e.usedBlocks)/float64(e.cfg.NumGPUBlocks), 1),
		RunningLoRAs: keys(e.runLoRA),
		WaitingLoRAs: keys(e.waitLoRA),
	}
}

// CountTokens approximates a tokenizer: four bytes a token, at least one.
func CountTokens(s string) int { return max((len(s)+3)/4, 1) }

// Generate runs a request through the simulated scheduler, calling emit for every token. It
// returns early with ctx's error when the client goes away, freeing its slot and blocks.
func (e *Engine) Generate(ctx context.Context, req Request, emit func(Token) error) (Result, error) {
	lora := ""
	if req.Model != e.cfg.Model {
		if !slices.Contains(e.cfg.LoRAs, req.Model) {
			return Result{}, fmt.Errorf("%w: %q (served: %v)", ErrUnknownModel, req.Model, e.Models())
		}
		lora = req.Model
	}
	promptTokens := CountTokens(req.Prompt)
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = e.cfg.DefaultMaxTokens
	}
	if promptTokens+maxTokens > e.cfg.MaxModelLen {
		return Result{}, fmt.Errorf("%w: %d prompt + %d output tokens exceed the model's %d", ErrPromptTooLong, promptTokens, maxTokens, e.cfg.MaxModelLen)
	}
	arrived := e.now()
	res := Result{PromptTokens: promptTokens}

	if err := e.admit(ctx, lora); err != nil {
		e.metrics.finished("abort")
		return res, err
	}
	res.QueueTime = e.now().Sub(arrived)
	blocks := e.blockHashes(req.Prompt)
	e.mu.Lock()
	hits := e.prefix.matchPrefix(blocks)
	needLoad := lora != "" && !e.loras.touch(lora)
	if needLoad {
		e.loras.add(lora)
	}
	held := blocksFor(promptTokens, e.cfg.BlockSize)
	e.usedBlocks += held
	e.mu.Unlock()
	res.CachedTokens = min(hits*e.cfg.BlockSize, promptTokens)

	defer func() {
		e.mu.Lock()
		e.usedBlocks -= held
		for _, b := range blocks {
			e.prefix.add(b)
		}
		e.mu.Unlock()
		e.release(lora)
	}()

	prefill := e.cfg.PrefillOverhead + time.Duration(float64(promptTokens-res.CachedTokens)/e.cfg.PrefillTokensPerSecond*float64(time.Second))
	if needLoad {
		prefill += e.cfg.LoRALoadLatency
	}
	if err := sleep(ctx, prefill); err != nil {
		e.metrics.finished("abort")
		return res, err
	}
	start := e.now()
	for i := 0; i < maxTokens; i++ {
		if i > 0 {
			e.mu.Lock()
			others := e.running - 1
			e.mu.Unlock()
			if err := sleep(ctx, e.cfg.DecodeLatency+time.Duration(others)*e.cfg.DecodeLatencyPerSeq); err != nil {
				e.metrics.finished("abort")
				return res, err
			}
		} else {
			res.TTFT = e.now().Sub(arrived)
		}
		if err := emit(Token{Text: word(i)}); err != nil {
			e.metrics.finished("abort")
			return res, err
		}
		res.CompletionTokens++
		if (promptTokens+res.CompletionTokens)%e.cfg.BlockSize == 1 {
			e.mu.Lock()
			e.usedBlocks++
			held++
			e.mu.Unlock()
		}
	}
	res.FinishReason = "length"
	e.metrics.observe(res, arrived, start, e.now(), maxTokens)
	return res, nil
}

// admit waits for a running slot in FIFO order.
func (e *Engine) admit(ctx context.Context, lora string) error {
	e.mu.Lock()
	if e.running < e.cfg.MaxNumSeqs && e.waiting.Len() == 0 {
		e.running++
		e.addLoRA(e.runLoRA, lora, 1)
		e.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{}), lora: lora}
	el := e.waiting.PushBack(w)
	e.addLoRA(e.waitLoRA, lora, 1)
	e.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		e.mu.Lock()
		defer e.mu.Unlock()
		select {
		case <-w.ready:
			// The slot was handed over as we gave up: give it back.
			e.running--
			e.addLoRA(e.runLoRA, lora, -1)
			e.handOver()
		default:
			e.waiting.Remove(el)
			e.addLoRA(e.waitLoRA, lora, -1)
		}
		return ctx.Err()
	}
}

func (e *Engine) release(lora string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running--
	e.addLoRA(e.runLoRA, lora, -1)
	e.handOver()
}

// handOver gives free slots to the first waiters. Called with mu held.
func (e *Engine) handOver() {
	for e.running < e.cfg.MaxNumSeqs && e.waiting.Len() > 0 {
		w := e.waiting.Remove(e.waiting.Front()).(*waiter)
		e.addLoRA(e.waitLoRA, w.lora, -1)
		e.addLoRA(e.runLoRA, w.lora, 1)
		e.running++
		close(w.ready)
	}
}

func (e *Engine) addLoRA(m map[string]int, lora string, d int) {
	if lora == "" {
		return
	}
	m[lora] += d
	if m[lora] <= 0 {
		delete(m, lora)
	}
	e.loraUpdate = e.now()
}

// blockHashes returns the chained hashes of the prompt's full blocks.
func (e *Engine) blockHashes(prompt string) []uint64 {
	blockBytes := e.cfg.BlockSize * 4
	n := len(prompt) / blockBytes
	out := make([]uint64, 0, n)
	var prev uint64
	for i := 0; i < n; i++ {
		var h maphash.Hash
		h.SetSeed(e.seed)
		var b [8]byte
		for j := range b {
			b[j] = byte(prev >> (8 * j))
		}
		_, _ = h.Write(b[:])
		_, _ = h.WriteString(prompt[i*blockBytes : (i+1)*blockBytes])
		prev = h.Sum64()
		out = append(out, prev)
	}
	return out
}

func blocksFor(tokens, blockSize int) int { return (tokens + blockSize - 1) / blockSize }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var words = []string{" the", " model", " answers", " with", " simulated", " tokens", " from", " Spillway"}

func word(i int) string { return words[i%len(words)] }

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// lru is a bounded set with least-recently-used eviction.
type lru struct {
	cap   int
	order *list.List // front = most recent
	items map[any]*list.Element
}

func newLRU(capacity int) *lru {
	return &lru{cap: capacity, order: list.New(), items: map[any]*list.Element{}}
}

// touch marks k used and reports whether it was present.
func (l *lru) touch(k any) bool {
	if el, ok := l.items[k]; ok {
		l.order.MoveToFront(el)
		return true
	}
	return false
}

func (l *lru) add(k any) {
	if l.touch(k) {
		return
	}
	l.items[k] = l.order.PushFront(k)
	for l.order.Len() > l.cap {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.items, old.Value)
	}
}

// matchPrefix counts the leading blocks present, marking them used.
func (l *lru) matchPrefix(blocks []uint64) int {
	n := 0
	for _, b := range blocks {
		if !l.touch(b) {
			break
		}
		n++
	}
	return n
}
