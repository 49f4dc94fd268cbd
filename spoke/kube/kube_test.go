package kube

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func TestExportedNeedsEveryLiveMember(t *testing.T) {
	alive := func(id string) fleet.Cluster {
		return fleet.Cluster{Info: fleet.ClusterInfo{ID: id}, State: fleet.StateAlive}
	}
	gone := fleet.Cluster{Info: fleet.ClusterInfo{ID: "old"}, State: fleet.StateGone}
	clusters := []fleet.Cluster{alive("a"), alive("b"), alive("c"), gone}
	imp := fleet.Import{ExportingClusters: []string{"a"}, Importers: []fleet.ImportStatus{
		{ClusterID: "a", Imported: true},
		{ClusterID: "b", Reason: ReasonNamespaceNotFound, Message: "namespace ml is missing"},
	}}
	reason, msg := exportedEverywhere(imp, clusters)
	if reason != ReasonPending || !strings.Contains(msg, "1 of 3") || !strings.Contains(msg, "b: NamespaceNotFound: namespace ml is missing") ||
		!strings.Contains(msg, "c: not reported yet") || strings.Contains(msg, "old") {
		t.Fatalf("got %s %q: want Pending naming b and c, not the gone cluster", reason, msg)
	}
	imp.Importers[1] = fleet.ImportStatus{ClusterID: "b", Imported: true}
	imp.Importers = append(imp.Importers, fleet.ImportStatus{ClusterID: "c", Imported: true})
	if reason, msg := exportedEverywhere(imp, clusters); reason != "Exported" || msg != "imported by all 3 live member clusters" {
		t.Fatalf("got %s %q", reason, msg)
	}
}

func TestOnlyWaiting(t *testing.T) {
	w := fmt.Errorf("%w: namespace x", errWaiting)
	if !onlyWaiting(errors.Join(w, nil, w)) {
		t.Fatal("joined waiting errors are only waiting")
	}
	if onlyWaiting(errors.Join(w, errors.New("apply failed"))) {
		t.Fatal("a real failure among waiting ones must be reported")
	}
}

func TestReadyEndpointSkipsUnreadyAndPortless(t *testing.T) {
	eps := []*discoveryv1.EndpointSlice{
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "0"}, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}}}},
	}
	if got, ok := readyEndpoint(eps); !ok || got != "10.0.0.9:80" {
		t.Fatalf("got %q %v, want the ready endpoint of slice b", got, ok)
	}
	if _, ok := readyEndpoint(eps[1:]); ok {
		t.Fatal("no ready endpoint with a port")
	}
}

// TestPodEngine: a Pod's engine-type label names its engine; without one, the engine GIE's metric
// flags gave, else vLLM; an unknown value is an error.
func TestPodEngine(t *testing.T) {
	for _, tc := range []struct {
		label   string
		def     modelmetrics.Engine
		want    modelmetrics.Engine
		wantErr bool
	}{
		{"", "", modelmetrics.EngineVLLM, false},
		{"", modelmetrics.EngineSGLang, modelmetrics.EngineSGLang, false},
		{"vllm", modelmetrics.EngineSGLang, modelmetrics.EngineVLLM, false},
		{"trtllm-serve", "", modelmetrics.EngineTRTLLMServe, false},
		{"tgi", modelmetrics.EngineSGLang, "", true},
	} {
		labels := map[string]string{}
		if tc.label != "" {
			labels[modelmetrics.EngineLabel] = tc.label
		}
		got, err := podEngine(labels, tc.def)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("label %q, default %q: %q, %v; want %q, error %v", tc.label, tc.def, got, err, tc.want, tc.wantErr)
		}
	}
}
