package spill

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestPolicySpec(t *testing.T) {
	var s PolicySpec
	if err := yaml.Unmarshal([]byte(`
poolRef: {name: chat}
eligiblePriorities: {min: 0}
tripMark: 0.8
minDwell: 1m30s
targetRegions: [us-west, eu-west]
mode: EndpointMode
failover: {standard: true}
`), &s); err != nil {
		t.Fatal(err)
	}
	p, err := s.Policy()
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultPolicy()
	want.MinPriority, want.TripMark, want.MinDwell, want.Mode, want.FailoverStandard = 0, 0.8, 90*time.Second, EndpointMode, true
	want.TargetRegions = []string{"us-west", "eu-west"}
	if p.MinPriority != want.MinPriority || p.TripMark != want.TripMark || p.ClearMark != want.ClearMark || p.MinDwell != want.MinDwell ||
		p.Mode != want.Mode || !p.FailoverStandard || len(p.TargetRegions) != 2 || p.Freshness != want.Freshness {
		t.Fatalf("policy %+v, want %+v", p, want)
	}
	bad := PolicySpec{MinDwell: "soon", Mode: "Teleport"}
	cm := 0.95
	bad.ClearMark = &cm
	_, err = bad.Policy()
	for _, w := range []string{"minDwell", "Teleport", "clearMark"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
}

// FuzzPolicySpec: whatever a user writes, Policy either refuses it or returns a valid policy.
func FuzzPolicySpec(f *testing.F) {
	f.Add([]byte(`{"tripMark":0.9,"clearMark":0.7,"minDwell":"10s","mode":"ParentMode"}`))
	f.Add([]byte(`{"tripMark":2,"freshness":"-1s"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s PolicySpec
		if yaml.Unmarshal(data, &s) != nil {
			return
		}
		p, err := s.Policy()
		if err == nil && p.Validate() != nil {
			t.Fatalf("accepted an invalid policy %+v", p)
		}
	})
}
