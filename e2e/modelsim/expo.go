package modelsim

import (
	"bytes"
	"math"
	"sort"
	"strconv"
	"strings"
)

// page renders a Prometheus text exposition whose every line is fixed but for its value: the
// prefixes are built once, so a scrape costs little more than copying the page. Hundreds of
// simulated servers are scraped every 50 ms in benchmarks; a general-purpose registry would
// make the simulator, not the scraper, the bottleneck.
type page struct {
	families []*family
}

type family struct {
	header []byte
	series []*series
}

type series struct {
	// prefix is "name{labels} " for counters and gauges.
	prefix []byte
	value  func() float64
	hist   *histogram
}

type histogram struct {
	upper   []float64
	buckets [][]byte // "name_bucket{labels,le="x"} " per bucket, +Inf last
	sumPre  []byte
	cntPre  []byte
	counts  []uint64 // per bucket, not cumulative; len(upper)+1
	sum     float64
	count   uint64
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v)
	h.counts[i]++
	h.sum += v
	h.count++
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(l[k]))
		b.WriteByte('"')
	}
	return b.String()
}

func (p *page) family(name, help, typ string) *family {
	f := &family{header: []byte("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")}
	p.families = append(p.families, f)
	return f
}

func wrap(labels string) string {
	if labels == "" {
		return ""
	}
	return "{" + labels + "}"
}

// scalar adds a counter or gauge series.
func (f *family) scalar(name string, labels map[string]string, value func() float64) {
	f.series = append(f.series, &series{prefix: []byte(name + wrap(labelString(labels)) + " "), value: value})
}

// histo adds a histogram series.
func (f *family) histo(name string, labels map[string]string, upper []float64) *histogram {
	ls := labelString(labels)
	h := &histogram{upper: upper, counts: make([]uint64, len(upper)+1)}
	for _, u := range append(append([]float64(nil), upper...), math.Inf(1)) {
		le := strconv.FormatFloat(u, 'f', -1, 64)
		if math.IsInf(u, 1) {
			le = "+Inf"
		} else if !strings.Contains(le, ".") {
			le += ".0"
		}
		sep := ""
		if ls != "" {
			sep = ","
		}
		h.buckets = append(h.buckets, []byte(name+"_bucket{"+ls+sep+`le="`+le+`"} `))
	}
	h.sumPre = []byte(name + "_sum" + wrap(ls) + " ")
	h.cntPre = []byte(name + "_count" + wrap(ls) + " ")
	f.series = append(f.series, &series{hist: h})
	return h
}

// render appends the page to dst; with names (a /metrics?name[]=… request, as prometheus_client
// serves it for vLLM and SGLang), only the series whose sample name is one of them, and the
// headers of their families (a histogram whole, when any of its samples is named). The caller
// holds whatever lock guards the values.
func (p *page) render(dst []byte, names map[string]bool) []byte {
	for _, f := range p.families {
		header := false
		for _, s := range f.series {
			if names != nil && !names[s.name()] && (s.hist == nil || !names[s.hist.name()+"_bucket"] && !names[s.hist.name()+"_sum"] && !names[s.hist.name()+"_count"]) {
				continue
			}
			if !header {
				dst, header = append(dst, f.header...), true
			}
			if s.hist == nil {
				dst = append(dst, s.prefix...)
				dst = strconv.AppendFloat(dst, s.value(), 'g', -1, 64)
				dst = append(dst, '\n')
				continue
			}
			h := s.hist
			var cum uint64
			for i, b := range h.buckets {
				cum += h.counts[i]
				dst = append(dst, b...)
				dst = strconv.AppendUint(dst, cum, 10)
				dst = append(dst, ".0\n"...)
			}
			dst = append(dst, h.sumPre...)
			dst = strconv.AppendFloat(dst, h.sum, 'g', -1, 64)
			dst = append(dst, '\n')
			dst = append(dst, h.cntPre...)
			dst = strconv.AppendUint(dst, h.count, 10)
			dst = append(dst, ".0\n"...)
		}
	}
	return dst
}

// name is a counter's or gauge's sample name; "" for a histogram.
func (s *series) name() string {
	if s.hist != nil {
		return ""
	}
	n := s.prefix
	if i := bytes.IndexAny(n, "{ "); i >= 0 {
		n = n[:i]
	}
	return string(n)
}

// name is the histogram's family name.
func (h *histogram) name() string {
	n, _, _ := bytes.Cut(h.sumPre, []byte("_sum"))
	return string(n)
}
