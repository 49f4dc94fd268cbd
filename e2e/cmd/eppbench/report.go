package main

import (
	"fmt"
	"os"
	"strings"
)

const (
	beginMarker = "<!-- epp-benchmark:begin (written by make bench-epp) -->"
	endMarker   = "<!-- epp-benchmark:end -->"
)

// markdown renders the report as the EPP section of docs/benchmarks.md.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s, with `%s`. Ratios are Spillway ÷ GIE (lower is better).\n\n", r.Date, r.Machine, r.Command)
	if len(r.SpillwayEnv) > 0 {
		fmt.Fprintf(&b, "The spoke ran with %s in its environment. ", strings.Join(r.SpillwayEnv, " "))
	}
	fmt.Fprintf(&b, "Each figure is the mean of %d rounds in which the two EPPs took turns, each on fresh simulators (peak RSS: the highest round). ", r.Rounds)
	fmt.Fprintf(&b, "A do-nothing ext_proc server in its own process (grpc-go, the spoke's server settings) answers the same client in %.3f ms (p50, %.1f thread blocks per request): the floor of every latency below.\n\n", r.BaselineP50, r.BaselineCtx)
	b.WriteString("| endpoints | scrape | p50 ms (S / GIE) | p50 ratio | p99 ms (S / GIE) | p99 ratio | 16-way p99 ms (S / GIE) | 16-way p99 ratio | CPU s per 1k req (S / GIE) | ratio | idle CPU cores (S / GIE) | ratio | peak RSS MiB (S / GIE) |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var notes []string
	for _, x := range r.Rows {
		if x.GIE.ReadyEndpoints != x.Endpoints {
			notes = append(notes, fmt.Sprintf("At %d endpoints GIE's EPP kept only %d ready (its scrapes timed out on this machine); it was measured with those.", x.Endpoints, x.GIE.ReadyEndpoints))
		}
		fmt.Fprintf(&b, "| %d | %s | %.3f / %.3f | **%.2f** | %.3f / %.3f | **%.2f** | %.3f / %.3f | **%.2f** | %.3f / %.3f | **%.2f** | %.3f / %.3f | **%.2f** | %.0f / %.0f |\n",
			x.Endpoints, x.Spillway.ScrapeEach, x.Spillway.P50ms, x.GIE.P50ms, x.P50Ratio, x.Spillway.P99ms, x.GIE.P99ms, x.P99Ratio,
			x.Spillway.ConcP99ms, x.GIE.ConcP99ms, x.ConcP99Ratio,
			x.Spillway.CPUPer1k, x.GIE.CPUPer1k, x.CPUPer1kRatio, x.Spillway.IdleCores, x.GIE.IdleCores, x.IdleCPURatio,
			x.Spillway.RSSMiB, x.GIE.RSSMiB)
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	q := r.Quality
	if q.Endpoints > 0 {
		fmt.Fprintf(&b, "\nRouting quality: %d endpoints, streamed requests arriving at %.0f/s with 8 shared 4 KB prefixes, through the same gateway; both EPPs get the same requests at the same offsets (a seeded workload).\n\n", q.Endpoints, q.Rate)
		b.WriteString("| EPP | requests | succeeded | TTFT p50 ms | TTFT p99 ms | prefix-cache hit rate |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range []struct {
			name string
			m    qualityMeasurement
		}{{"Spillway", q.Spillway}, {"GIE v1.5.0", q.GIE}} {
			fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %.3f |\n", s.name, s.m.Requests, s.m.Succeeded, s.m.TTFTp50ms, s.m.TTFTp99ms, s.m.PrefixHitRate)
		}
	}
	return b.String()
}

// updateDoc replaces the marked section of a markdown file with the report.
func updateDoc(path string, r *report) error {
	return updateSection(path, beginMarker, endMarker, r.markdown())
}

// updateSection replaces what lies between the begin and end markers of a markdown file.
func updateSection(path, begin, end, text string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
