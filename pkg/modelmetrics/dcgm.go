package modelmetrics

import (
	"cmp"
	"fmt"
	"math"
)

// DCGMGPUUtil is the family of NVIDIA's DCGM exporter that routing reads: each GPU's utilisation
// in percent, the share of the last sample period in which a kernel ran on it.
const DCGMGPUUtil = "DCGM_FI_DEV_GPU_UTIL"

// GPUUtil is one GPU as a DCGM exporter reports it: its utilisation, 0..1, and the Pod the
// exporter attributes it to (its Kubernetes mode labels series with namespace, pod and container,
// or pod_namespace, pod_name and container_name with --use-old-namespace); Pod is empty for a GPU
// no Pod holds, or an exporter that does not attribute.
type GPUUtil struct {
	Namespace, Pod string
	// GPU is the exporter's gpu label (the device index), UUID the GPU's.
	GPU, UUID   string
	Utilization float64
}

// DCGMParser parses DCGM exporter pages. It is not safe for concurrent use.
type DCGMParser struct {
	p Parser
}

// NewDCGMParser returns a parser of DCGM exporter pages.
func NewDCGMParser() *DCGMParser {
	return &DCGMParser{p: Parser{engine: "dcgm", wanted: [][]byte{[]byte(DCGMGPUUtil)}}}
}

// Parse reads the GPUs' utilisation from a page, appended to dst. It fails on a malformed
// DCGM_FI_DEV_GPU_UTIL line, or when the page has none; every other family is ignored unread.
func (d *DCGMParser) Parse(page []byte, dst []GPUUtil) ([]GPUUtil, error) {
	p := &d.p
	p.series, p.pairs = p.series[:0], p.pairs[:0]
	if _, err := p.filter(page); err != nil {
		return dst, fmt.Errorf("parse DCGM exporter metrics: %w", err)
	}
	if len(p.series) == 0 {
		return dst, fmt.Errorf("DCGM exporter %s: %w", DCGMGPUUtil, ErrMissingMetric)
	}
	for _, s := range p.series {
		if math.IsNaN(s.value) {
			continue
		}
		dst = append(dst, GPUUtil{
			Namespace:   cmp.Or(string(p.label(s, "namespace")), string(p.label(s, "pod_namespace"))),
			Pod:         cmp.Or(string(p.label(s, "pod")), string(p.label(s, "pod_name"))),
			GPU:         string(p.label(s, "gpu")),
			UUID:        string(p.label(s, "UUID")),
			Utilization: min(max(s.value/100, 0), 1),
		})
	}
	return dst, nil
}

// PodGPUUtilization maps each Pod (namespace/name) to the mean utilisation of the GPUs a DCGM
// exporter attributes to it; GPUs attributed to no Pod are left out.
func PodGPUUtilization(gpus []GPUUtil) map[string]float64 {
	sum, n := map[string]float64{}, map[string]int{}
	for _, g := range gpus {
		if g.Pod == "" || g.Namespace == "" {
			continue
		}
		k := g.Namespace + "/" + g.Pod
		sum[k] += g.Utilization
		n[k]++
	}
	out := make(map[string]float64, len(sum))
	for k, s := range sum {
		out[k] = s / float64(n[k])
	}
	return out
}
