package modelmetrics

import (
	"math"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// FuzzParseLineAgrees holds the sample-line reader against prometheus/common's text parser, the
// reference for the format: any line of a wanted family that the reader accepts, the reference
// accepts too and reads the same labels and value from. (The reference also tolerates a few
// oddities no exposition library writes, such as quotes inside an unquoted label name; the
// reader refuses those, and the scrape reports the error.)
func FuzzParseLineAgrees(f *testing.F) {
	for _, s := range []string{
		` 3`, `{engine="0",model_name="m"} 3`, `{a="b",} 1.5e3 1700000000000`, `{} NaN`, ` +Inf`,
		`{a="x\\y\"z\nw"} -0`, `{a="b" , c = "d"} 1 `, `{a="b"} 1 2 `, `{a="b"} 0x1p3`, `{a="b"} 1_000`,
		`{a="b",a="c"} 1`, `{__name__="x"} 1`, `{a="\q"} 1`, `{"a"="b"} 1`, `{a="b"}`, `{a=b} 1`, "\t2\t3",
		`{a="` + "\xff" + `"} 1`, `{0a="b"} 1`, ` 1 x`, ` 1 2 3`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		line := "vllm:num_requests_waiting" + rest
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		p, _ := NewParser(EngineVLLM)
		fam := p.wants([]byte(line))
		if fam < 0 {
			return
		}
		ours := p.parseLine([]byte(line), fam)
		tp := expfmt.NewTextParser(model.LegacyValidation)
		fams, theirs := tp.TextToMetricFamilies(strings.NewReader(line + "\n"))
		if ours != nil {
			return
		}
		if theirs != nil {
			t.Fatalf("line %q: accepted, but prometheus/common refuses it: %v", line, theirs)
		}
		mf := fams["vllm:num_requests_waiting"]
		if len(fams) != 1 || mf == nil || len(mf.GetMetric()) != 1 || len(p.series) != 1 {
			t.Fatalf("line %q: %d series, prometheus/common read %v", line, len(p.series), fams)
		}
		m, s := mf.GetMetric()[0], p.series[0]
		want := m.GetUntyped().GetValue()
		if s.value != want && !(math.IsNaN(s.value) && math.IsNaN(want)) {
			t.Fatalf("line %q: value %v, prometheus/common %v", line, s.value, want)
		}
		var got, exp []string
		for _, l := range p.pairs[s.lo:s.hi] {
			got = append(got, string(l.name)+"="+string(l.value))
		}
		for _, l := range m.GetLabel() {
			exp = append(exp, l.GetName()+"="+l.GetValue())
		}
		slices.Sort(got)
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Fatalf("line %q: labels %q, prometheus/common %q", line, got, exp)
		}
	})
}

// FuzzParseLineReadsWrittenLines: every sample line prometheus/common writes, whatever its label
// values and value, the reader accepts and reads back unchanged.
func FuzzParseLineReadsWrittenLines(f *testing.F) {
	f.Add("0", "m", uint64(0x4008000000000000), int64(0))
	f.Add("a \\ \"b\"\nc", "\xe2\x82\xac", math.Float64bits(math.Inf(-1)), int64(1700000000000))
	f.Add("", "", math.Float64bits(math.NaN()), int64(-5))
	f.Fuzz(func(t *testing.T, engine, model string, bits uint64, ts int64) {
		if !utf8.ValidString(engine) || !utf8.ValidString(model) {
			return
		}
		v := math.Float64frombits(bits)
		mf := &dto.MetricFamily{
			Name: proto.String("vllm:num_requests_waiting"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{
				Label: []*dto.LabelPair{{Name: proto.String("engine"), Value: proto.String(engine)}, {Name: proto.String("model_name"), Value: proto.String(model)}},
				Gauge: &dto.Gauge{Value: proto.Float64(v)},
			}},
		}
		if ts != 0 {
			mf.Metric[0].TimestampMs = proto.Int64(ts)
		}
		var b strings.Builder
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
		p, _ := NewParser(EngineVLLM)
		if _, err := p.filter([]byte(b.String())); err != nil {
			t.Fatalf("written page %q: %v", b.String(), err)
		}
		if len(p.series) != 1 {
			t.Fatalf("written page %q: %d series", b.String(), len(p.series))
		}
		s := p.series[0]
		if got := s.value; got != v && !(math.IsNaN(got) && math.IsNaN(v)) {
			t.Fatalf("written page %q: value %v, want %v", b.String(), got, v)
		}
		if e, m := string(p.label(s, "engine")), string(p.label(s, "model_name")); e != engine || m != model || s.hi-s.lo != 2 {
			t.Fatalf("written page %q: labels %q %q (%d), want %q %q", b.String(), e, m, s.hi-s.lo, engine, model)
		}
	})
}
