// Package regions is the three-region end-to-end run (`make e2e`): a management namespace with
// the hub and three region namespaces, each with a spoke, a gateway, simulated model servers and
// a toxiproxy that gives the links between regions their latency. hack/e2e.sh builds the
// namespaces (as root) and runs these tests; without it they skip.
package regions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
)

// region is one region of the run.
type region struct {
	localfleet.Region
	index int // its namespace is <prefix>-r<index>, its address 10.77.<index>.1
}

// Latency between regions, one way, as toxiproxy adds it to each direction: us-east–us-west
// 10 ms (20 ms round trip), to and from eu-west 40 ms (80 ms round trip).
var oneWay = map[[2]string]int{
	{"us-east", "us-west"}: 10, {"us-west", "us-east"}: 10,
	{"us-east", "eu-west"}: 40, {"eu-west", "us-east"}: 40,
	{"us-west", "eu-west"}: 40, {"eu-west", "us-west"}: 40,
}

type run struct {
	prefix  string
	bin     string
	fleet   *localfleet.Fleet
	regions []region
}

// proxyPort is where region from reaches region to's gateway: its toxiproxy listener.
func proxyPort(to int) int { return 18100 + to }

func start(t *testing.T, ctx context.Context) *run {
	t.Helper()
	prefix := os.Getenv("SPILLWAY_NETNS_PREFIX")
	if prefix == "" {
		t.Skip("run by make e2e (root; it builds the network namespaces)")
	}
	r := &run{prefix: prefix, bin: os.Getenv("SPILLWAY_BIN_DIR")}
	o := localfleet.Options{BinDir: r.bin, WorkDir: t.TempDir(), HubNetns: prefix + "-mgmt",
		HubGRPC: "10.77.0.1:8470", HubHTTP: "10.77.0.1:8471", HubGossip: "10.77.0.1:7946", LeaseTTL: 5 * time.Second,
		SimArgs:   []string{"--max-num-seqs", "2", "--decode-latency", "30ms"},
		EPPConfig: localfleet.EPPConfig + "spill: {minDwell: 3s}\n"}
	names := []string{"us-east", "us-west", "eu-west"}
	for i, name := range names {
		n := i + 1
		reg := localfleet.Region{Name: name, Cluster: name + "-1", Netns: fmt.Sprintf("%s-r%d", prefix, n),
			SpokeHTTP: "127.0.0.1:8481", EPP: "127.0.0.1:9002", Gateway: fmt.Sprintf("10.77.%d.1:8080", n),
			Gossip: fmt.Sprintf("10.77.%d.1:7946", n), Endpoints: []string{"127.0.0.1:8000", "127.0.0.2:8000"}}
		for j, other := range names {
			if j != i {
				reg.SpokeArgs = append(reg.SpokeArgs, "--remote-gateway", fmt.Sprintf("%s-1=127.0.0.1:%d", other, proxyPort(j+1)))
			}
		}
		r.regions = append(r.regions, region{Region: reg, index: n})
		o.Regions = append(o.Regions, reg)
	}
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	r.fleet = f
	t.Cleanup(func() { f.Stop() })
	for _, reg := range r.regions {
		r.startToxiproxy(t, ctx, reg, names)
	}
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// startToxiproxy runs a toxiproxy in the region's namespace with one proxy per other region's
// gateway, latency on both directions.
func (r *run) startToxiproxy(t *testing.T, ctx context.Context, reg region, names []string) {
	t.Helper()
	p, err := r.fleet.StartIn(reg.Netns, "toxiproxy-"+reg.Cluster, filepath.Join(r.bin, "toxiproxy-server"), "-host", "127.0.0.1", "-port", "8474")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	api := func(path, body string) error {
		var last error
		for range 50 { // until the server listens
			out, err := r.exec(ctx, reg.Netns, "curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
				"--data", body, "http://127.0.0.1:8474"+path)
			if err == nil {
				return nil
			}
			last = fmt.Errorf("%w: %s", err, out)
			time.Sleep(100 * time.Millisecond)
		}
		return last
	}
	for j, other := range names {
		if other == reg.Name {
			continue
		}
		name := "to-" + other
		if err := api("/proxies", fmt.Sprintf(`{"name":%q,"listen":"127.0.0.1:%d","upstream":"10.77.%d.1:8080","enabled":true}`, name, proxyPort(j+1), j+1)); err != nil {
			t.Fatalf("toxiproxy in %s: %v", reg.Name, err)
		}
		ms := oneWay[[2]string{reg.Name, other}]
		for _, stream := range []string{"upstream", "downstream"} {
			if err := api("/proxies/"+name+"/toxics", fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":1}}`, stream, stream, ms)); err != nil {
				t.Fatalf("toxiproxy in %s: %v", reg.Name, err)
			}
		}
	}
}

func (r *run) exec(ctx context.Context, ns, bin string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...).CombinedOutput()
}

// load runs bin/loadgen in a region's namespace against its gateway and returns its summary.
func (r *run) load(ctx context.Context, reg region, rate float64, d time.Duration) ([]loadgen.ClassSummary, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", reg.Netns, filepath.Join(r.bin, "loadgen"),
		"--target", "http://"+reg.Gateway, "--rate", fmt.Sprint(rate), "--duration", d.String(), "--max-tokens", "16",
		"--class", "Critical=critical:0.2", "--class", "Standard=standard:0.5", "--class", "BestEffort=batch:0.3")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("loadgen in %s: %w\n%s", reg.Name, err, errb.String())
	}
	var sums []loadgen.ClassSummary
	if err := json.Unmarshal(out.Bytes(), &sums); err != nil {
		return nil, fmt.Errorf("loadgen summary: %w\n%s", err, out.String())
	}
	return sums, nil
}

func class(sums []loadgen.ClassSummary, name string) loadgen.ClassSummary {
	for _, s := range sums {
		if s.Class == name {
			return s
		}
	}
	return loadgen.ClassSummary{Class: name}
}

// remoteShare returns the share of a class's requests served through another region's proxy,
// by region name.
func (r *run) remoteShare(s loadgen.ClassSummary) (total float64, by map[string]float64) {
	by = map[string]float64{}
	if s.Requests == 0 {
		return 0, by
	}
	for addr, n := range s.Served {
		for _, reg := range r.regions {
			if addr == fmt.Sprintf("127.0.0.1:%d", proxyPort(reg.index)) {
				by[reg.Name] += float64(n) / float64(s.Requests)
				total += float64(n) / float64(s.Requests)
			}
		}
	}
	return total, by
}

// TestThreeRegions: steady state stays local; us-east bursting to about three times its
// capacity spills Critical to the nearest healthy region (us-west, 20 ms away rather than
// eu-west's 80 ms), keeps Standard and sheds BestEffort; spilling stops after the burst.
func TestThreeRegions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := start(t, ctx)
	east := r.regions[0]

	t.Run("steady state: no spill", func(t *testing.T) {
		sums, err := r.load(ctx, east, 2, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sums {
			if total, _ := r.remoteShare(s); total > 0 || s.Succeeded != s.Requests {
				t.Errorf("%s at steady state: %+v (remote share %.2f): want every request served locally", s.Class, s, total)
			}
		}
	})

	t.Run("burst: Critical spills to the nearest region", func(t *testing.T) {
		// Capacity per region: 2 endpoints × 2 sequences, 16 tokens × 30 ms ≈ 8 requests/s.
		sums, err := r.load(ctx, east, 24, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		crit, std, be := class(sums, "Critical"), class(sums, "Standard"), class(sums, "BestEffort")
		t.Logf("burst: critical %+v\nstandard %+v\nbesteffort %+v", crit, std, be)
		if crit.Requests == 0 || float64(crit.Succeeded)/float64(crit.Requests) < 0.99 {
			t.Errorf("critical success %d/%d: want ≥ 99%%", crit.Succeeded, crit.Requests)
		}
		total, by := r.remoteShare(crit)
		if total < 0.2 || by["us-west"] <= by["eu-west"] {
			t.Errorf("critical served elsewhere: %.2f (%v): want a real share, mostly in us-west", total, by)
		}
		if total, _ := r.remoteShare(std); total > 0 {
			t.Errorf("standard left us-east (%.2f): it must stay", total)
		}
		if be.Statuses["429"] == 0 {
			t.Errorf("besteffort statuses %v: want some shed with 429", be.Statuses)
		}
	})

	t.Run("after the burst: spilling stops", func(t *testing.T) {
		time.Sleep(5 * time.Second) // past the policy's minimum dwell
		sums, err := r.load(ctx, east, 2, 8*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if total, _ := r.remoteShare(class(sums, "Critical")); total > 0 {
			t.Errorf("critical still spilled %.2f after the burst", total)
		}
	})
	if t.Failed() {
		for _, p := range r.fleet.Procs() {
			if strings.Contains(p.Name, "spoke-us-east") {
				b, _ := os.ReadFile(p.LogPath)
				t.Logf("%s log tail:\n%s", p.Name, tail(string(b), 3000))
			}
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
