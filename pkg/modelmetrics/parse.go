// Package modelmetrics reads model-server /metrics pages (vLLM, SGLang, trtllm-serve, Triton
// TensorRT-LLM) into the few signals that routing needs, with the metric names of GIE's
// model-server protocol, and scrapes endpoints for them.
//
// Parsing reads only the sample lines of the families it needs, with a reader of the text format's
// sample-line grammar (textline.go) held to prometheus/common's parser by fuzz tests, so a 60 KB
// page costs a scan for its few relevant lines.
//
// Pages may carry several series of one family. Series that differ in a data-parallel label
// (vLLM "engine", SGLang "dp_rank") are separate engines behind one endpoint: their queues and
// running counts add up and the KV-cache use is the highest of them. Series that differ otherwise
// (SGLang "tp_rank") describe the same requests: the highest value is taken.
package modelmetrics

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Engine is a model-server type, the value of the Pod label EngineLabel.
type Engine string

// Engines.
const (
	EngineVLLM         Engine = "vllm"
	EngineSGLang       Engine = "sglang"
	EngineTRTLLMServe  Engine = "trtllm-serve"
	EngineTritonTRTLLM Engine = "triton-trtllm"
)

// EngineLabel is the Pod label that names an endpoint's engine; vLLM when absent.
const EngineLabel = "inference.networking.k8s.io/engine-type"

// ErrMissingMetric means a page lacks a signal routing needs.
var ErrMissingMetric = errors.New("metric missing from page")

// ErrUnknownEngine means the engine name is not one of the known engines.
var ErrUnknownEngine = errors.New("unknown engine type")

// Metrics are the routing signals of one endpoint.
type Metrics struct {
	// WaitingQueue is the number of requests waiting to be scheduled.
	WaitingQueue int
	// Running is the number of requests in the running batch.
	Running int
	// KVCacheUsage is the fraction of KV-cache blocks in use, 0..1.
	KVCacheUsage float64
	// ActiveLoRAs and WaitingLoRAs are the adapters of running and waiting requests (vLLM only).
	ActiveLoRAs  []string
	WaitingLoRAs []string
	// MaxLoRAs is how many adapters the server can hold at once; 0 when unknown.
	MaxLoRAs int
	// BlockSize is the KV-cache block size in tokens and NumBlocks the number of GPU blocks; 0 when unknown.
	BlockSize int
	NumBlocks int
	// Models are the model names the server labels its queue series with (model_name, as vLLM,
	// SGLang and trtllm-serve do), at most MaxModels; nil when it labels none. The slice is
	// shared between scrapes while the names stay the same: never modify it.
	Models []string
}

// MaxModels bounds the model names read from one page, and ModelNameBytes each name.
const (
	MaxModels      = 16
	ModelNameBytes = 253
)

// selector picks one signal: a family, optionally one label value, and how series combine.
type selector struct {
	family     string
	labelName  string // when set, only series with labelName=labelValue count
	labelValue string
}

type engineSpec struct {
	queue, running selector
	kv             []selector // first found wins (new name first, then old)
	dpLabel        string
	lora           string
	cacheConfig    string
	blockSizeLabel string
	numBlocksLabel string
	// nameFilter is true for servers whose /metrics is prometheus_client's ASGI app (vLLM's and
	// SGLang's): it honours name[] query parameters, which restrict the page to those samples.
	nameFilter bool
}

var specs = map[Engine]engineSpec{
	EngineVLLM: {
		queue:          selector{family: "vllm:num_requests_waiting"},
		running:        selector{family: "vllm:num_requests_running"},
		kv:             []selector{{family: "vllm:kv_cache_usage_perc"}, {family: "vllm:gpu_cache_usage_perc"}},
		dpLabel:        "engine",
		lora:           "vllm:lora_requests_info",
		cacheConfig:    "vllm:cache_config_info",
		blockSizeLabel: "block_size",
		numBlocksLabel: "num_gpu_blocks",
		nameFilter:     true,
	},
	EngineSGLang: {
		queue:          selector{family: "sglang:num_queue_reqs"},
		running:        selector{family: "sglang:num_running_reqs"},
		kv:             []selector{{family: "sglang:token_usage"}},
		dpLabel:        "dp_rank",
		cacheConfig:    "sglang:cache_config_info",
		blockSizeLabel: "page_size",
		numBlocksLabel: "num_pages",
		nameFilter:     true,
	},
	EngineTRTLLMServe: {
		queue:   selector{family: "trtllm_num_requests_waiting"},
		running: selector{family: "trtllm_num_requests_running"},
		kv:      []selector{{family: "trtllm_kv_cache_utilization"}},
	},
	EngineTritonTRTLLM: {
		queue:   selector{family: "nv_trt_llm_request_metrics", labelName: "request_type", labelValue: "waiting"},
		running: selector{family: "nv_trt_llm_request_metrics", labelName: "request_type", labelValue: "scheduled"},
		kv:      []selector{{family: "nv_trt_llm_kv_cache_block_metrics", labelName: "kv_cache_block_type", labelValue: "fraction"}},
	},
}

// gieNamed are metrics GIE's chart names for an engine (--cache-info-metric) that routing does
// not read.
var gieNamed = map[string]Engine{"trtllm_cache_config_info": EngineTRTLLMServe}

// EngineOfMetric is the engine whose page has the metric a GIE EPP flag names (a family, with
// GIE's {label=value} selector where it has one, such as sglang:num_queue_reqs or
// nv_trt_llm_request_metrics{request_type=waiting}); false when no engine Spillway reads has it.
func EngineOfMetric(metric string) (Engine, bool) {
	family, _, _ := strings.Cut(metric, "{")
	if family == "" {
		return "", false
	}
	if e, ok := gieNamed[family]; ok {
		return e, true
	}
	for _, e := range slices.Sorted(maps.Keys(specs)) {
		s := specs[e]
		families := []string{s.queue.family, s.running.family, s.lora, s.cacheConfig}
		for _, kv := range s.kv {
			families = append(families, kv.family)
		}
		if slices.Contains(families, family) {
			return e, true
		}
	}
	return "", false
}

// ParseEngine maps a label value to an engine; empty means vLLM.
func ParseEngine(s string) (Engine, error) {
	if s == "" {
		return EngineVLLM, nil
	}
	e := Engine(s)
	if _, ok := specs[e]; !ok {
		return "", fmt.Errorf("%w %q: want vllm, sglang, trtllm-serve or triton-trtllm", ErrUnknownEngine, s)
	}
	return e, nil
}

// Parser parses pages of one engine. It is not safe for concurrent use; a scraper keeps one per
// goroutine.
type Parser struct {
	engine Engine
	spec   engineSpec
	wanted [][]byte
	// The sample lines of wanted families on the page being parsed, their labels in pairs.
	series []series
	pairs  []labelPair
	ranks  []rankValue
	// The cache-config info line carries a score of labels and changes only when the server
	// restarts: it is parsed when its text changes, not on every scrape.
	cachePrefix          []byte
	cacheLine            []byte
	blockSize, numBlocks int
	// models are the model names of the last page; kept while they stay the same, so a scrape
	// allocates none.
	models []string
	names  [][]byte // scratch: the names on the page being parsed
}

// series is one sample line: its family (an index into wanted), its labels (pairs[lo:hi]) and
// its value.
type series struct {
	family int
	lo, hi int
	value  float64
}

type labelPair struct{ name, value []byte }

type rankValue struct {
	rank  []byte
	value float64
}

// NewParser returns a parser for an engine's pages.
func NewParser(e Engine) (*Parser, error) {
	spec, ok := specs[e]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownEngine, e)
	}
	var w [][]byte
	for _, f := range []string{spec.queue.family, spec.running.family, spec.lora, spec.cacheConfig} {
		if f != "" && !slices.ContainsFunc(w, func(b []byte) bool { return string(b) == f }) {
			w = append(w, []byte(f))
		}
	}
	for _, k := range spec.kv {
		w = append(w, []byte(k.family))
	}
	p := &Parser{engine: e, spec: spec, wanted: w}
	if spec.cacheConfig != "" {
		p.cachePrefix = []byte(spec.cacheConfig + "{")
	}
	return p, nil
}

// FilteredPath returns path with name[] query parameters for the families the parser reads,
// for an engine whose server honours them (see engineSpec.nameFilter); else path as it is. The
// families are gauges, whose one sample name is the family's.
func (p *Parser) FilteredPath(path string) string {
	if !p.spec.nameFilter {
		return path
	}
	q := url.Values{}
	for _, w := range p.wanted {
		q.Add("name[]", string(w))
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + q.Encode()
}

// Parse reads a page. It fails on a malformed relevant line or when the queue or KV-cache signal
// is missing; every other family on the page is ignored unread.
func (p *Parser) Parse(page []byte) (Metrics, error) {
	p.series, p.pairs = p.series[:0], p.pairs[:0]
	cacheSeen, err := p.filter(page)
	if err != nil {
		p.cacheLine = p.cacheLine[:0] // parse the cache-config line again next time
		return Metrics{}, fmt.Errorf("parse %s metrics: %w", p.engine, err)
	}
	var m Metrics
	var ok bool
	var v float64
	if v, ok = p.value(p.spec.queue, false); !ok {
		return Metrics{}, fmt.Errorf("%s queue %s: %w", p.engine, p.spec.queue.family, ErrMissingMetric)
	}
	m.WaitingQueue = clampInt(v)
	if v, ok = p.value(p.spec.running, false); ok {
		m.Running = clampInt(v)
	}
	found := false
	for _, s := range p.spec.kv {
		if v, ok = p.value(s, true); ok {
			m.KVCacheUsage = min(max(v, 0), 1)
			found = true
			break
		}
	}
	if !found {
		return Metrics{}, fmt.Errorf("%s KV-cache %s: %w", p.engine, p.spec.kv[0].family, ErrMissingMetric)
	}
	m.Models = p.modelNames()
	if p.spec.lora != "" {
		p.lora(&m)
	}
	if p.spec.cacheConfig != "" {
		if s, ok := p.first(p.spec.cacheConfig); ok {
			p.blockSize = p.labelInt(s, p.spec.blockSizeLabel)
			p.numBlocks = p.labelInt(s, p.spec.numBlocksLabel)
		} else if !cacheSeen {
			p.cacheLine, p.blockSize, p.numBlocks = p.cacheLine[:0], 0, 0
		}
		m.BlockSize, m.NumBlocks = p.blockSize, p.numBlocks
	}
	return m, nil
}

// filter reads the sample lines of wanted families; comments are left out (samples are read as
// untyped, which is all routing needs). A cache-config line equal to the last one parsed is left
// out too; cacheSeen reports whether the page had one.
func (p *Parser) filter(page []byte) (cacheSeen bool, err error) {
	for len(page) > 0 {
		line := page
		if i := bytes.IndexByte(page, '\n'); i >= 0 {
			line, page = page[:i], page[i+1:]
		} else {
			page = nil
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		fam := p.wants(line)
		if fam < 0 {
			continue
		}
		if p.cachePrefix != nil && bytes.HasPrefix(line, p.cachePrefix) {
			cacheSeen = true
			if bytes.Equal(line, p.cacheLine) {
				continue
			}
			p.cacheLine = append(p.cacheLine[:0], line...)
		}
		if err := p.parseLine(line, fam); err != nil {
			return cacheSeen, fmt.Errorf("%w in line %q", err, truncate(line))
		}
	}
	return cacheSeen, nil
}

// wants returns the wanted family a sample line belongs to, -1 for none: its name is one of
// them, followed by labels or the value. Per wanted name, the byte after where the name would
// end is looked at first: on most lines of a page it is part of a longer name, and the line is
// passed over without comparing names.
func (p *Parser) wants(line []byte) int {
	for i, w := range p.wanted {
		if len(line) <= len(w) {
			continue
		}
		if c := line[len(w)]; (c == '{' || c == ' ' || c == '\t') && string(line[:len(w)]) == string(w) {
			return i
		}
	}
	return -1
}

// family returns the index of a wanted family.
func (p *Parser) family(name string) int {
	for i, w := range p.wanted {
		if string(w) == name {
			return i
		}
	}
	return -1
}

// first returns the first series of a family.
func (p *Parser) first(name string) (series, bool) {
	f := p.family(name)
	for _, s := range p.series {
		if s.family == f {
			return s, true
		}
	}
	return series{}, false
}

// value combines the series of a selector: max within a data-parallel rank, then the sum across
// ranks (or the max across ranks when maxAcross is set, for utilisations).
func (p *Parser) value(sel selector, maxAcross bool) (float64, bool) {
	f := p.family(sel.family)
	p.ranks = p.ranks[:0]
	for _, s := range p.series {
		if s.family != f || math.IsNaN(s.value) {
			continue
		}
		if sel.labelName != "" && string(p.label(s, sel.labelName)) != sel.labelValue {
			continue
		}
		var rank []byte
		if p.spec.dpLabel != "" {
			rank = p.label(s, p.spec.dpLabel)
		}
		i := slices.IndexFunc(p.ranks, func(r rankValue) bool { return bytes.Equal(r.rank, rank) })
		switch {
		case i < 0:
			p.ranks = append(p.ranks, rankValue{rank: rank, value: s.value})
		case s.value > p.ranks[i].value:
			p.ranks[i].value = s.value
		}
	}
	if len(p.ranks) == 0 {
		return 0, false
	}
	var total float64
	for _, r := range p.ranks {
		if maxAcross {
			total = max(total, r.value)
		} else {
			total += r.value
		}
	}
	return total, true
}

// lora reads vllm:lora_requests_info: one series per update, the value its time; the newest
// wins. Servers that stamp the time in whole seconds (and data-parallel engines, one series
// each) leave several series with the newest value: the adapters running or waiting in any of
// them count, once each, and the largest max_lora. Taking one of them (the first on the page)
// would drop adapters that are loaded, and the LoRA scorer would send their requests elsewhere.
func (p *Parser) lora(m *Metrics) {
	f := p.family(p.spec.lora)
	newest, found := 0.0, false
	for _, s := range p.series {
		if s.family == f && (!found || s.value > newest) {
			newest, found = s.value, true
		}
	}
	if !found {
		return
	}
	for _, s := range p.series {
		if s.family != f || s.value != newest {
			continue
		}
		m.ActiveLoRAs = appendNew(m.ActiveLoRAs, splitList(string(p.label(s, "running_lora_adapters"))))
		m.WaitingLoRAs = appendNew(m.WaitingLoRAs, splitList(string(p.label(s, "waiting_lora_adapters"))))
		m.MaxLoRAs = max(m.MaxLoRAs, p.labelInt(s, "max_lora"))
	}
}

// modelNames returns the distinct model_name values of the queue family's series, in page
// order: the models the server serves. Names past MaxModels, or longer than ModelNameBytes, are
// left out. While the names stay those of the last page, the same slice is returned again, so a
// scrape allocates nothing for them.
func (p *Parser) modelNames() []string {
	f := p.family(p.spec.queue.family)
	p.names = p.names[:0]
	for _, s := range p.series {
		if s.family != f {
			continue
		}
		name := p.label(s, "model_name")
		if len(name) == 0 || len(name) > ModelNameBytes || slices.ContainsFunc(p.names, func(n []byte) bool { return bytes.Equal(n, name) }) {
			continue
		}
		if len(p.names) == MaxModels {
			break
		}
		p.names = append(p.names, name)
	}
	if len(p.names) == 0 {
		p.models = nil
		return nil
	}
	if !slices.EqualFunc(p.names, p.models, func(n []byte, m string) bool { return string(n) == m }) {
		p.models = make([]string, len(p.names))
		for i, n := range p.names {
			p.models[i] = string(n)
		}
	}
	return p.models
}

// appendNew appends the names of add that dst does not hold yet.
func appendNew(dst, add []string) []string {
	for _, a := range add {
		if !slices.Contains(dst, a) {
			dst = append(dst, a)
		}
	}
	return dst
}

func (p *Parser) label(s series, name string) []byte {
	for _, l := range p.pairs[s.lo:s.hi] {
		if string(l.name) == name {
			return l.value
		}
	}
	return nil
}

func (p *Parser) labelInt(s series, name string) int {
	n, err := strconv.Atoi(string(p.label(s, name)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func splitList(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func clampInt(v float64) int {
	switch {
	case math.IsNaN(v) || v < 0:
		return 0
	case v > math.MaxInt32:
		return math.MaxInt32
	}
	return int(v)
}
