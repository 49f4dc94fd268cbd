// Package modelmetrics reads model-server /metrics pages (vLLM, SGLang, trtllm-serve, Triton
// TensorRT-LLM) into the few signals that routing needs, with the metric names of GIE's
// model-server protocol, and scrapes endpoints for them.
//
// Parsing keeps only the lines of the families it needs and hands them to the Prometheus text
// parser of prometheus/common, so a 60 KB page costs what its few relevant lines cost.
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
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
}

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
	},
	EngineSGLang: {
		queue:          selector{family: "sglang:num_queue_reqs"},
		running:        selector{family: "sglang:num_running_reqs"},
		kv:             []selector{{family: "sglang:token_usage"}},
		dpLabel:        "dp_rank",
		cacheConfig:    "sglang:cache_config_info",
		blockSizeLabel: "page_size",
		numBlocksLabel: "num_pages",
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
	buf    bytes.Buffer
	tp     expfmt.TextParser
	// The cache-config info line carries a score of labels and changes only when the server
	// restarts: it is parsed when its text changes, not on every scrape.
	cachePrefix          []byte
	cacheLine            []byte
	blockSize, numBlocks int
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
	p := &Parser{engine: e, spec: spec, wanted: w, tp: expfmt.NewTextParser(model.LegacyValidation)}
	if spec.cacheConfig != "" {
		p.cachePrefix = []byte(spec.cacheConfig + "{")
	}
	return p, nil
}

// Parse reads a page. It fails on a malformed relevant line or when the queue or KV-cache signal
// is missing; every other family on the page is ignored unread.
func (p *Parser) Parse(page []byte) (Metrics, error) {
	p.buf.Reset()
	cacheSeen := p.filter(page)
	fams, err := p.tp.TextToMetricFamilies(&p.buf)
	if err != nil {
		p.cacheLine = p.cacheLine[:0] // parse the cache-config line again next time
		return Metrics{}, fmt.Errorf("parse %s metrics: %w", p.engine, err)
	}
	var m Metrics
	var ok bool
	var v float64
	if v, ok = p.value(fams, p.spec.queue, false); !ok {
		return Metrics{}, fmt.Errorf("%s queue %s: %w", p.engine, p.spec.queue.family, ErrMissingMetric)
	}
	m.WaitingQueue = clampInt(v)
	if v, ok = p.value(fams, p.spec.running, false); ok {
		m.Running = clampInt(v)
	}
	found := false
	for _, s := range p.spec.kv {
		if v, ok = p.value(fams, s, true); ok {
			m.KVCacheUsage = min(max(v, 0), 1)
			found = true
			break
		}
	}
	if !found {
		return Metrics{}, fmt.Errorf("%s KV-cache %s: %w", p.engine, p.spec.kv[0].family, ErrMissingMetric)
	}
	if p.spec.lora != "" {
		p.lora(fams[p.spec.lora], &m)
	}
	if p.spec.cacheConfig != "" {
		if f := fams[p.spec.cacheConfig]; f != nil && len(f.GetMetric()) > 0 {
			p.blockSize = labelInt(f.GetMetric()[0], p.spec.blockSizeLabel)
			p.numBlocks = labelInt(f.GetMetric()[0], p.spec.numBlocksLabel)
		} else if !cacheSeen {
			p.cacheLine, p.blockSize, p.numBlocks = p.cacheLine[:0], 0, 0
		}
		m.BlockSize, m.NumBlocks = p.blockSize, p.numBlocks
	}
	return m, nil
}

// filter copies the sample lines of wanted families into p.buf; comments are left out (the
// parser reads the samples as untyped, which is all routing needs). A cache-config line equal
// to the last one parsed is left out too; cacheSeen reports whether the page had one.
func (p *Parser) filter(page []byte) (cacheSeen bool) {
	for len(page) > 0 {
		line := page
		if i := bytes.IndexByte(page, '\n'); i >= 0 {
			line, page = page[:i+1], page[i+1:]
		} else {
			page = nil
		}
		if len(line) == 0 || line[0] == '#' || !p.wants(line) {
			continue
		}
		if p.cachePrefix != nil && bytes.HasPrefix(line, p.cachePrefix) {
			cacheSeen = true
			if bytes.Equal(line, p.cacheLine) {
				continue
			}
			p.cacheLine = append(p.cacheLine[:0], line...)
		}
		{
			p.buf.Write(line)
			if line[len(line)-1] != '\n' {
				p.buf.WriteByte('\n')
			}
		}
	}
	return cacheSeen
}

// wants reports whether a sample line belongs to a wanted family: its name is one of them, followed
// by labels or the value. A handful of prefix comparisons per line beat finding the name's end and
// hashing it.
func (p *Parser) wants(line []byte) bool {
	for _, w := range p.wanted {
		if len(line) > len(w) && bytes.HasPrefix(line, w) {
			switch line[len(w)] {
			case '{', ' ', '\t':
				return true
			}
		}
	}
	return false
}

// value combines the series of a selector: max within a data-parallel rank, then the sum across
// ranks (or the max across ranks when maxAcross is set, for utilisations).
func (p *Parser) value(fams map[string]*dto.MetricFamily, s selector, maxAcross bool) (float64, bool) {
	f := fams[s.family]
	if f == nil {
		return 0, false
	}
	perRank := map[string]float64{}
	for _, m := range f.GetMetric() {
		if s.labelName != "" && label(m, s.labelName) != s.labelValue {
			continue
		}
		v := sampleValue(m)
		if math.IsNaN(v) {
			continue
		}
		rank := ""
		if p.spec.dpLabel != "" {
			rank = label(m, p.spec.dpLabel)
		}
		if cur, ok := perRank[rank]; !ok || v > cur {
			perRank[rank] = v
		}
	}
	if len(perRank) == 0 {
		return 0, false
	}
	var total float64
	for _, v := range perRank {
		if maxAcross {
			total = max(total, v)
		} else {
			total += v
		}
	}
	return total, true
}

// lora reads vllm:lora_requests_info: one series per update, the value its time; the newest wins.
func (p *Parser) lora(f *dto.MetricFamily, m *Metrics) {
	if f == nil {
		return
	}
	var newest *dto.Metric
	for _, s := range f.GetMetric() {
		if newest == nil || sampleValue(s) > sampleValue(newest) {
			newest = s
		}
	}
	if newest == nil {
		return
	}
	m.ActiveLoRAs = splitList(label(newest, "running_lora_adapters"))
	m.WaitingLoRAs = splitList(label(newest, "waiting_lora_adapters"))
	m.MaxLoRAs = labelInt(newest, "max_lora")
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func labelInt(m *dto.Metric, name string) int {
	n, err := strconv.Atoi(label(m, name))
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
