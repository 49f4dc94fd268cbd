package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
)

type countingEPP struct{ calls int }

func (c *countingEPP) Process(context.Context, ...grpc.CallOption) (extprocv3.ExternalProcessor_ProcessClient, error) {
	c.calls++
	return nil, nil
}

// TestRoundRobinSpreadsRequests: request i goes to replica i mod n, so each replica gets every
// n-th request.
func TestRoundRobinSpreadsRequests(t *testing.T) {
	eps := []*countingEPP{{}, {}, {}}
	rr := &roundRobin{}
	for _, e := range eps {
		rr.eps = append(rr.eps, e)
	}
	for i := range 7 {
		_, _ = rr.Process(t.Context())
		if want := i/3 + 1; eps[i%3].calls != want {
			t.Fatalf("after request %d replica %d had %d calls, want %d", i, i%3, eps[i%3].calls, want)
		}
	}
}

// TestReplicasSummary: means over rounds, the hit-rate gap in points and the TTFT ratio against
// one replica, and the targets judged on the shared setup only.
func TestReplicasSummary(t *testing.T) {
	q := func(p50, hit float64) qualityMeasurement {
		return qualityMeasurement{Requests: 100, Succeeded: 100, TTFTp50ms: p50, PrefixHitRate: hit}
	}
	r := &replicasReport{Replicas: 3, Detail: []replicasRound{
		{Setup: setupOne, Quality: q(10, 0.98)}, {Setup: setupOne, Quality: q(12, 0.96)},
		{Setup: setupShared, Quality: q(11, 0.96)}, {Setup: setupShared, Quality: q(12, 0.96)},
		{Setup: setupIndependent, Quality: q(30, 0.70)}, {Setup: setupIndependent, Quality: q(34, 0.72)},
	}}
	r.summarize()
	if r.One.TTFTp50ms != 11 || r.One.PrefixHitRate != 0.97 || r.One.Requests != 200 {
		t.Fatalf("one replica: %+v", r.One)
	}
	if r.SharedHitRateGapPoints != 1 || r.SharedTTFTp50Ratio != 1.045 || !r.TargetsMet {
		t.Fatalf("shared: gap %v points, ratio %v, targets met %v", r.SharedHitRateGapPoints, r.SharedTTFTp50Ratio, r.TargetsMet)
	}
	if r.IndependentHitRateGapPoints != 26 || r.IndependentTTFTp50Ratio != 2.909 {
		t.Fatalf("independent: gap %v points, ratio %v", r.IndependentHitRateGapPoints, r.IndependentTTFTp50Ratio)
	}
	r.Detail[3].Quality.PrefixHitRate = 0.90 // shared mean 0.93: 4 points below one replica
	r.One, r.Shared, r.Independent = qualityMeasurement{}, qualityMeasurement{}, qualityMeasurement{}
	r.summarize()
	if r.TargetsMet || !strings.Contains(r.markdown(), "**not met**") {
		t.Fatalf("a 4-point gap met the targets (gap %v)", r.SharedHitRateGapPoints)
	}
}

func TestUpdateSectionReplacesOnlyItsOwn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	doc := "head\n" + beginMarker + "\nepp\n" + endMarker + "\nmid\n" + replicasBeginMarker + "\nold\n" + replicasEndMarker + "\ntail\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateSection(path, replicasBeginMarker, replicasEndMarker, "new\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := strings.Replace(doc, "\nold\n", "\nnew\n", 1); string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if err := updateSection(path, "<!-- nope -->", replicasEndMarker, "x"); err == nil {
		t.Fatal("a missing marker was not an error")
	}
}

func TestReplicasCommandLineNamesWhatChangesTheRun(t *testing.T) {
	cmd := newReplicasCommand()
	if err := cmd.ParseFlags([]string{"--json", "x.json", "--work-dir", "/tmp/w"}); err != nil {
		t.Fatal(err)
	}
	if got := replicasCommandLine(cmd); got != replicasCommand {
		t.Errorf("command %q", got)
	}
	cmd = newReplicasCommand()
	if err := cmd.ParseFlags([]string{"--rounds", "3", "--json", "x.json"}); err != nil {
		t.Fatal(err)
	}
	if got, want := replicasCommandLine(cmd), "make bench-epp BENCH_ARGS='replicas --rounds=3'"; got != want {
		t.Errorf("command %q, want %q", got, want)
	}
}
