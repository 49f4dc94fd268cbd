package fleetpb

import (
	"reflect"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// TestCapacityRoundTrip: a pool's capacity, with its models, prefix sketch and GPU utilisation
// (pool and endpoints, present or absent), is the same after a trip through its message.
func TestCapacityRoundTrip(t *testing.T) {
	gpu, egpu := 0.4, 0.0
	c := fleet.PoolCapacity{
		Pool: fleet.PoolRef{Namespace: "llm", Name: "chat"}, ReadyEndpoints: 2, TotalEndpoints: 3, QueueDepth: 4,
		KVCacheUtilization: 0.5, Saturation: 0.6, LoRAAdapters: []string{"sql-lora"}, Models: []string{"meta-llama/Llama-3.1-8B-Instruct"},
		PrefixSketch:   &fleet.PrefixSketch{Bloom: []byte{1, 2, 3, 4}, HashFunctions: 11, Sample: 8, BlockBytes: 64, Entries: 2},
		GPUUtilization: &gpu, ObservedAt: time.Unix(1700000000, 0).UTC(),
		Endpoints: []fleet.EndpointCapacity{
			{Address: "10.0.0.1:8000", Ready: true, GPUUtilization: &egpu}, // an idle GPU is 0, not absent
			{Address: "10.0.0.2:8000"},
		},
	}
	got := CapacityFrom(Capacity(c))
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	if !got.SameLoad(c) {
		t.Fatal("SameLoad of equal capacities is false")
	}
	other := 0.5
	changed := got
	changed.Endpoints = append([]fleet.EndpointCapacity(nil), got.Endpoints...)
	changed.Endpoints[0].GPUUtilization = &other
	if changed.SameLoad(c) {
		t.Fatal("SameLoad misses an endpoint's GPU utilisation change")
	}
	if got := CapacityFrom(nil); got.GPUUtilization != nil || got.PrefixSketch != nil {
		t.Fatalf("no message: %+v", got)
	}
}
