package modelmetrics

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseDCGMPublishedPage: the page NVIDIA's DCGM exporter served for one GPU outside
// Kubernetes gives its utilisation and no Pod; the same series as the exporter's Kubernetes mode
// labels them are attributed to their Pods (the current and the old label names), and a Pod
// with two GPUs gets their mean.
func TestParseDCGMPublishedPage(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("testdata", "dcgm-exporter-datadog-fixture.prom"))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDCGMParser()
	gpus, err := d.Parse(page, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 1 || gpus[0].GPU != "0" || gpus[0].UUID != "GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e" || gpus[0].Utilization != 0 || gpus[0].Pod != "" {
		t.Fatalf("GPUs %+v, want GPU 0 idle and attributed to no Pod", gpus)
	}
	if got := PodGPUUtilization(gpus); len(got) != 0 {
		t.Fatalf("unattributed GPUs gave Pods %v", got)
	}

	// The Kubernetes mode's labels, on a node with three GPUs: two held by one Pod, one by another.
	var line string
	for _, l := range strings.Split(string(page), "\n") {
		if strings.HasPrefix(l, DCGMGPUUtil+"{") {
			line = l
		}
	}
	attributed := func(gpu, value, labels string) string {
		l := strings.Replace(line, `gpu="0"`, `gpu="`+gpu+`"`, 1)
		l = strings.Replace(l, "} 0", ","+labels+"} "+value, 1)
		return l + "\n"
	}
	k8s := string(page) +
		attributed("1", "80", `container="vllm",namespace="llm",pod="chat-0"`) +
		attributed("2", "40", `container="vllm",namespace="llm",pod="chat-0"`) +
		attributed("3", "25", `container_name="vllm",pod_namespace="llm",pod_name="code-0"`)
	gpus, err = d.Parse([]byte(k8s), gpus[:0])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"llm/chat-0": 0.6, "llm/code-0": 0.25}
	got := PodGPUUtilization(gpus)
	if !maps.EqualFunc(got, want, func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }) || len(got) != len(want) {
		t.Fatalf("Pods' utilisation %v, want %v", got, want)
	}
}

// TestParseDCGMKubernetesPages: two captures of NVIDIA's DCGM exporter in Kubernetes mode, on a
// node of eight GPUs of which one is held by a Pod (its series carry container, namespace and
// pod, the later exporter an empty pod_uid too; the others carry none): that GPU's utilisation is
// its Pod's, and no other Pod is named.
func TestParseDCGMKubernetesPages(t *testing.T) {
	d := NewDCGMParser()
	for file, want := range map[string]struct{ gpu, pod string }{
		"dcgm-exporter-k8s-nvidia-aicr-h100.prom":         {"6", "dynamo-workload/vllm-agg-0-vllmdecodeworker-5fljt"},
		"dcgm-exporter-k8s-nvidia-aicr-h100-pod-uid.prom": {"0", "dynamo-workload/vllm-agg-0-vllmdecodeworker-s65j5"},
	} {
		page, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		gpus, err := d.Parse(page, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(gpus) != 8 {
			t.Fatalf("%s: %d GPUs, want 8", file, len(gpus))
		}
		for _, g := range gpus {
			if held := g.Namespace + "/" + g.Pod; (g.GPU == want.gpu) != (held == want.pod) || g.GPU != want.gpu && g.Pod != "" {
				t.Errorf("%s: GPU %s attributed to %q", file, g.GPU, held)
			}
		}
		if got, ok := PodGPUUtilization(gpus)[want.pod]; !ok || got != 0 || len(PodGPUUtilization(gpus)) != 1 {
			t.Errorf("%s: Pods' utilisation %v, want %s alone, at 0 (the capture's value)", file, PodGPUUtilization(gpus), want.pod)
		}
	}
}

func TestParseDCGMRefuses(t *testing.T) {
	d := NewDCGMParser()
	for name, page := range map[string]string{
		"a model server's page":  "vllm:num_requests_waiting 1\n",
		"a malformed GPU series": `DCGM_FI_DEV_GPU_UTIL{gpu="0" 12` + "\n",
	} {
		_, err := d.Parse([]byte(page), nil)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if name == "a model server's page" && !errors.Is(err, ErrMissingMetric) {
			t.Errorf("%s: %v, want ErrMissingMetric", name, err)
		}
	}
}

// FuzzParseDCGM: any page parses or fails without panicking, and what it gives is in range.
func FuzzParseDCGM(f *testing.F) {
	for _, file := range []string{"dcgm-exporter-datadog-fixture.prom", "dcgm-exporter-k8s-nvidia-aicr-h100.prom", "dcgm-exporter-k8s-nvidia-aicr-h100-pod-uid.prom"} {
		if page, err := os.ReadFile(filepath.Join("testdata", file)); err == nil {
			f.Add(page)
		}
	}
	f.Add([]byte(`DCGM_FI_DEV_GPU_UTIL{gpu="0",namespace="a",pod="b"} 150` + "\n"))
	f.Fuzz(func(t *testing.T, page []byte) {
		gpus, err := NewDCGMParser().Parse(page, nil)
		if err != nil {
			return
		}
		for _, g := range gpus {
			if !(g.Utilization >= 0 && g.Utilization <= 1) {
				t.Fatalf("utilisation %v out of 0..1", g.Utilization)
			}
		}
	})
}
