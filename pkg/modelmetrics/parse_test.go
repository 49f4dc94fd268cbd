package modelmetrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParsePublishedPages(t *testing.T) {
	tests := []struct {
		file    string
		engine  Engine
		want    Metrics
		wantErr error
	}{
		{file: "vllm-v0.19.1-kvwarden-snapshot.prom", engine: EngineVLLM,
			want: Metrics{BlockSize: 16, NumBlocks: 7975, Models: []string{"meta-llama/Llama-3.1-8B-Instruct"}}},
		{file: "vllm-v0.7-aibrix-runtime-docs.prom", engine: EngineVLLM,
			want: Metrics{BlockSize: 16, Models: []string{"Qwen/Qwen2.5-Coder-1.5B-Instruct"}}},
		{file: "vllm-v0.5-datadog-fixture.prom", engine: EngineVLLM,
			want: Metrics{BlockSize: 16, NumBlocks: 7281, Models: []string{"facebook/opt-125m"}}},
		// The v1 design doc's snippet elides the queue ("..."): a page without it is refused.
		{file: "vllm-v1-docs-design-metrics.snippet.prom", engine: EngineVLLM, wantErr: ErrMissingMetric},
		{file: "sglang-docs-production-metrics.prom", engine: EngineSGLang,
			want: Metrics{WaitingQueue: 2826, Running: 162, KVCacheUsage: 0.28, Models: []string{"meta-llama/Llama-3.1-8B-Instruct"}}},
		{file: "sglang-v0.5.10-datadog-fixture.prom", engine: EngineSGLang,
			want: Metrics{KVCacheUsage: 0.25, Models: []string{"facebook/opt-125m"}}},
		{file: "triton-trtllm-backend-inflight-batcher.prom", engine: EngineTritonTRTLLM,
			want: Metrics{WaitingQueue: 1, Running: 1, KVCacheUsage: 0.4875}},
		// The illustrative trtllm-serve page in the Dynamo docs has latency histograms only.
		{file: "trtllm-serve-via-dynamo-docs.illustrative.prom", engine: EngineTRTLLMServe, wantErr: ErrMissingMetric},
		// A Triton page without the TRT-LLM backend has no KV-cache signal.
		{file: "triton-trtllm-backend-base-triton.prom", engine: EngineTritonTRTLLM, wantErr: ErrMissingMetric},
		// A vLLM page read as SGLang is a configuration error, and says so.
		{file: "vllm-v0.19.1-kvwarden-snapshot.prom", engine: EngineSGLang, wantErr: ErrMissingMetric},
	}
	for _, tt := range tests {
		t.Run(string(tt.engine)+"/"+tt.file, func(t *testing.T) {
			page, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewParser(tt.engine)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Parse(page)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.WaitingQueue != tt.want.WaitingQueue || got.Running != tt.want.Running ||
				got.KVCacheUsage != tt.want.KVCacheUsage || got.BlockSize != tt.want.BlockSize ||
				(tt.want.NumBlocks != 0 && got.NumBlocks != tt.want.NumBlocks) || !slices.Equal(got.Models, tt.want.Models) {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestParseModelNames: the models are the distinct model_name values of the queue series,
// bounded; the slice is reused while they stay the same and replaced, never changed, when they
// change; a page without the label has none.
func TestParseModelNames(t *testing.T) {
	page := func(models ...string) []byte {
		var b strings.Builder
		b.WriteString("vllm:kv_cache_usage_perc 0.5\n")
		for i, m := range models {
			fmt.Fprintf(&b, "vllm:num_requests_waiting{engine=\"%d\",model_name=%q} 1\n", i, m)
		}
		return []byte(b.String())
	}
	p, _ := NewParser(EngineVLLM)
	first, err := p.Parse(page("base", "base", "sql-lora"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.Models, []string{"base", "sql-lora"}) {
		t.Fatalf("models %q, want [base sql-lora]", first.Models)
	}
	again, _ := p.Parse(page("base", "sql-lora"))
	if &again.Models[0] != &first.Models[0] {
		t.Error("the same names were allocated again")
	}
	changed, _ := p.Parse(page("other"))
	if !slices.Equal(changed.Models, []string{"other"}) || !slices.Equal(first.Models, []string{"base", "sql-lora"}) {
		t.Fatalf("after a change: models %q, and the earlier result became %q", changed.Models, first.Models)
	}
	var many []string
	for i := range MaxModels + 5 {
		many = append(many, fmt.Sprintf("m%d", i))
	}
	many = append(many, strings.Repeat("x", ModelNameBytes+1))
	if got, _ := p.Parse(page(many...)); len(got.Models) != MaxModels || got.Models[0] != "m0" {
		t.Fatalf("%d models kept of %d (first %q), want the first %d", len(got.Models), len(many), got.Models[0], MaxModels)
	}
	if got, _ := p.Parse([]byte("vllm:kv_cache_usage_perc 0.5\nvllm:num_requests_waiting 1\n")); got.Models != nil {
		t.Fatalf("a page without model_name gave models %q", got.Models)
	}
}

func TestParseVLLMOldNameAndLoRA(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("testdata", "vllm-v0.7-aibrix-runtime-docs.prom"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "vllm:gpu_cache_usage_perc") || strings.Contains(string(page), "vllm:kv_cache_usage_perc") {
		t.Fatal("fixture no longer exercises the old KV-cache name")
	}
	p, _ := NewParser(EngineVLLM)
	m, err := p.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxLoRAs != 0 || len(m.ActiveLoRAs) != 0 {
		t.Fatalf("empty LoRA info parsed as %+v", m)
	}
}

func TestParseSeriesCombination(t *testing.T) {
	page := []byte(`# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3
vllm:num_requests_waiting{engine="1",model_name="m"} 4
vllm:num_requests_running{engine="0",model_name="m"} 2
vllm:num_requests_running{engine="1",model_name="m"} 5
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 100
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="tools"} 200
`)
	p, _ := NewParser(EngineVLLM)
	m, err := p.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	if m.WaitingQueue != 7 || m.Running != 7 || m.KVCacheUsage != 0.75 {
		t.Fatalf("data-parallel engines combined as %+v, want queue 7, running 7, kv 0.75", m)
	}
	if !slices.Equal(m.ActiveLoRAs, []string{"sql-lora", "chat-lora"}) || !slices.Equal(m.WaitingLoRAs, []string{"tools"}) || m.MaxLoRAs != 4 {
		t.Fatalf("LoRA from the newest series = %+v", m)
	}
	// Times in whole seconds: three series share the newest. Every adapter of those three counts
	// once; the older series' adapter does not.
	whole := []byte(`vllm:num_requests_waiting{model_name="m"} 0
vllm:num_requests_running{model_name="m"} 0
vllm:gpu_cache_usage_perc{model_name="m"} 0.1
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 1.738217335e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.738217336e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="tools"} 1.738217336e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="chat-lora",waiting_lora_adapters="tools,sum"} 1.738217336e+09
`)
	if m, err = p.Parse(whole); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.ActiveLoRAs, []string{"sql-lora", "chat-lora"}) || !slices.Equal(m.WaitingLoRAs, []string{"tools", "sum"}) || m.MaxLoRAs != 4 {
		t.Fatalf("LoRA from three series stamped in the same second = %+v, want running sql-lora, chat-lora and waiting tools, sum", m)
	}

	tp := []byte(`sglang:num_queue_reqs{model_name="m",tp_rank="0"} 6
sglang:num_queue_reqs{model_name="m",tp_rank="1"} 6
sglang:token_usage{model_name="m",tp_rank="0"} 0.5
sglang:token_usage{model_name="m",tp_rank="1"} 0.5
`)
	sp, _ := NewParser(EngineSGLang)
	m, err = sp.Parse(tp)
	if err != nil {
		t.Fatal(err)
	}
	if m.WaitingQueue != 6 {
		t.Fatalf("tensor-parallel ranks double counted: queue %d, want 6", m.WaitingQueue)
	}
}

func TestParseMalformed(t *testing.T) {
	p, _ := NewParser(EngineVLLM)
	for _, page := range []string{
		"vllm:num_requests_waiting{engine=\"0\" 3\nvllm:kv_cache_usage_perc 0.1\n",
		"vllm:num_requests_waiting abc\nvllm:kv_cache_usage_perc 0.1\n",
		"",
	} {
		if _, err := p.Parse([]byte(page)); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", page)
		}
	}
	// Malformed lines of families routing does not read are not read at all.
	m, err := p.Parse([]byte("garbage{{{ line\nvllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.5\n"))
	if err != nil || m.WaitingQueue != 2 || m.KVCacheUsage != 0.5 {
		t.Fatalf("Parse with unrelated garbage = %+v, %v", m, err)
	}
}

func TestParseEngine(t *testing.T) {
	if e, err := ParseEngine(""); err != nil || e != EngineVLLM {
		t.Fatalf("ParseEngine(\"\") = %q, %v; want vllm", e, err)
	}
	if _, err := ParseEngine("tgi"); !errors.Is(err, ErrUnknownEngine) {
		t.Fatalf("ParseEngine(tgi) error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.prom"))
	for _, fn := range files {
		b, _ := os.ReadFile(fn)
		f.Add(b, uint8(0))
	}
	f.Add([]byte("vllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc +Inf\n"), uint8(0))
	engines := []Engine{EngineVLLM, EngineSGLang, EngineTRTLLMServe, EngineTritonTRTLLM}
	f.Fuzz(func(t *testing.T, page []byte, e uint8) {
		p, _ := NewParser(engines[int(e)%len(engines)])
		m, err := p.Parse(page)
		if err != nil {
			return
		}
		if m.WaitingQueue < 0 || m.Running < 0 || !(m.KVCacheUsage >= 0 && m.KVCacheUsage <= 1) {
			t.Fatalf("out-of-range metrics %+v", m)
		}
	})
}

// TestParseReusesTheCacheConfig: the cache-config line is parsed when it changes; an unchanged
// line keeps its values, a changed one replaces them, a page without one clears them.
func TestParseReusesTheCacheConfig(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("testdata", "vllm-v0.19.1-kvwarden-snapshot.prom"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewParser(EngineVLLM)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := p.Parse(page)
		if err != nil || got.BlockSize != 16 || got.NumBlocks != 7975 {
			t.Fatalf("parse %d: %+v %v: want block size 16, 7975 blocks", i, got, err)
		}
	}
	changed := strings.Replace(string(page), `num_gpu_blocks="7975"`, `num_gpu_blocks="100"`, 1)
	if changed == string(page) {
		t.Fatal("fixture no longer has num_gpu_blocks=\"7975\"")
	}
	if got, err := p.Parse([]byte(changed)); err != nil || got.NumBlocks != 100 {
		t.Fatalf("changed cache config: %+v %v: want 100 blocks", got, err)
	}
	var without []string
	for _, l := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(l, "vllm:cache_config_info{") {
			without = append(without, l)
		}
	}
	if got, err := p.Parse([]byte(strings.Join(without, "\n"))); err != nil || got.BlockSize != 0 || got.NumBlocks != 0 {
		t.Fatalf("no cache config: %+v %v: want zeros", got, err)
	}
}

// TestServerQuirksDoNotChangeRouting: servers that leave out the engine label, or whose
// prefix-cache counters lack the _total suffix (prometheus_client before 0.9 and OpenMetrics
// pages name counters either way), give the same routing signals as the published vLLM page
// they are made from.
func TestServerQuirksDoNotChangeRouting(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("testdata", "vllm-v0.19.1-kvwarden-snapshot.prom"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `engine="0"`) || !strings.Contains(string(page), "vllm:prefix_cache_hits_total") {
		t.Fatal("the page no longer shows the engine label and the prefix-cache counters")
	}
	parse := func(p []byte) Metrics {
		t.Helper()
		ps, _ := NewParser(EngineVLLM)
		m, err := ps.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	want := parse(page)
	noEngine := regexp.MustCompile(`engine="[^"]*",?`).ReplaceAll(page, nil)
	noTotal := regexp.MustCompile(`(vllm:prefix_cache_(?:queries|hits))_total\b`).ReplaceAll(page, []byte("$1"))
	for name, variant := range map[string][]byte{"no engine label": noEngine, "prefix-cache counters without _total": noTotal} {
		if string(variant) == string(page) {
			t.Fatalf("%s: the variant equals the page", name)
		}
		if got := parse(variant); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
}

// TestParseLLMDSimulatorPages: pages captured from llm-d's vLLM simulator, which stamps
// vllm:lora_requests_info in whole seconds (so several series share the newest value), puts no
// engine label on its series and names its prefix-cache counters without _total. The adapter
// state is the union of the series stamped with the newest value, and only theirs.
func TestParseLLMDSimulatorPages(t *testing.T) {
	const model = "meta-llama/Llama-3.1-8B-Instruct"
	for _, tc := range []struct {
		file             string
		sharedNewest     int // series stamped with the newest value
		running, waiting []string
		queue, inBatch   int
		kvCache          float64
	}{
		{"llm-d-inference-sim-lora-running.prom", 4, []string{"sql-lora", "tools-lora"}, []string{"chat-lora"}, 2, 2, 0.001953125},
		// After the requests: the newest series says nothing runs; three older ones share a
		// second and name adapters, which must not count.
		{"llm-d-inference-sim-after.prom", 1, nil, nil, 0, 0, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			page, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			// The page shows the quirks this test is about.
			s := string(page)
			if strings.Contains(s, "engine=") || !strings.Contains(s, "vllm:prefix_cache_hits{") || strings.Contains(s, "prefix_cache_hits_total") {
				t.Fatal("the page no longer lacks the engine label and the prefix counters' _total")
			}
			stamps := map[string]int{}
			newest := ""
			for _, line := range strings.Split(s, "\n") {
				if strings.HasPrefix(line, "vllm:lora_requests_info{") {
					v := line[strings.LastIndexByte(line, ' ')+1:]
					stamps[v]++
					if newest == "" || v > newest { // same exponent form: string order is numeric
						newest = v
					}
				}
			}
			if stamps[newest] != tc.sharedNewest || !strings.HasSuffix(newest, "e+09") || strings.Count(newest, ".") != 1 || len(newest) != len("1.795957553e+09") {
				t.Fatalf("newest LoRA stamp %s on %d series, want a whole second on %d", newest, stamps[newest], tc.sharedNewest)
			}
			p, _ := NewParser(EngineVLLM)
			m, err := p.Parse(page)
			if err != nil {
				t.Fatal(err)
			}
			sorted := func(s []string) []string { return slices.Sorted(slices.Values(s)) }
			if got := sorted(m.ActiveLoRAs); !slices.Equal(got, tc.running) {
				t.Errorf("running adapters %v, want %v", got, tc.running)
			}
			if got := sorted(m.WaitingLoRAs); !slices.Equal(got, tc.waiting) {
				t.Errorf("waiting adapters %v, want %v", got, tc.waiting)
			}
			if m.MaxLoRAs != 2 || m.WaitingQueue != tc.queue || m.Running != tc.inBatch || m.KVCacheUsage != tc.kvCache ||
				m.BlockSize != 16 || m.NumBlocks != 1024 || !slices.Equal(m.Models, []string{model}) {
				t.Errorf("parsed %+v", m)
			}
		})
	}
}
