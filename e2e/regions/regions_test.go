package regions

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/testkit"
)

func start(t *testing.T, ctx context.Context, spokeArgs ...string) *Run {
	t.Helper()
	prefix := os.Getenv("SPILLWAY_NETNS_PREFIX")
	if prefix == "" {
		t.Skip("run by make e2e (root; it builds the network namespaces)")
	}
	r, err := Start(ctx, Config{Prefix: prefix, BinDir: os.Getenv("SPILLWAY_BIN_DIR"), WorkDir: t.TempDir(), SpokeArgs: spokeArgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// share is the fraction of a class's requests served in each other region, and in all of them.
func (r *Run) share(from Region, rs []loadgen.Result, class string) (total float64, by map[string]float64) {
	by = map[string]float64{}
	n := 0
	for _, res := range rs {
		if res.Class != class {
			continue
		}
		n++
		if reg := r.RemoteRegion(from, res); reg != "" {
			by[reg]++
			total++
		}
	}
	if n == 0 {
		return 0, by
	}
	for k := range by {
		by[k] /= float64(n)
	}
	return total / float64(n), by
}

// spilling is a condition for testkit.Eventually: the region's spoke says (GET /spill) that its
// pool is spilling, or is not.
func (r *Run) spilling(ctx context.Context, reg Region, want bool) func() error {
	return func() error {
		body, err := r.SpokeGet(ctx, reg, "/spill")
		if err != nil {
			return err
		}
		var rep struct {
			State struct{ Spilling bool } `json:"state"`
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			return fmt.Errorf("GET /spill of %s: %w", reg.Name, err)
		}
		if rep.State.Spilling != want {
			return fmt.Errorf("%s spilling: %v, want %v", reg.Name, rep.State.Spilling, want)
		}
		return nil
	}
}

// endpoints is a condition for testkit.Eventually: the region's spoke counts want local endpoints
// (spillway_spoke_endpoints, fresh and stale) in its pool, as it reads them from its pool file.
func (r *Run) endpoints(ctx context.Context, reg Region, want int) func() error {
	return func() error {
		page, err := r.SpokeGet(ctx, reg, "/metrics")
		if err != nil {
			return err
		}
		var n float64
		for _, l := range strings.Split(string(page), "\n") {
			if rest, ok := strings.CutPrefix(l, "spillway_spoke_endpoints{"); ok {
				v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
				if err != nil {
					return fmt.Errorf("%s: %q: %w", reg.Name, l, err)
				}
				n += v
			}
		}
		if int(n) != want {
			return fmt.Errorf("%s's spoke has %v endpoints, want %d", reg.Name, n, want)
		}
		return nil
	}
}

func summary(rs []loadgen.Result, class string) loadgen.ClassSummary {
	for _, s := range loadgen.Summarize(rs) {
		if s.Class == class {
			return s
		}
	}
	return loadgen.ClassSummary{Class: class}
}

// TestThreeRegions: steady state stays local; us-east bursting to about three times its
// capacity spills Critical, to the nearest healthy region first (us-west, 20 ms away rather than
// eu-west's 80 ms) and to eu-west as us-west's expected wait grows, keeps Standard and sheds
// BestEffort; spilling stops after the burst.
func TestThreeRegions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := start(t, ctx)
	east := r.Regions[0]

	t.Run("steady state: no spill", func(t *testing.T) {
		rs, err := r.Load(ctx, east, Load{Rate: 2, Duration: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range loadgen.Summarize(rs) {
			if total, _ := r.share(east, rs, s.Class); total > 0 || s.Succeeded != s.Requests {
				t.Errorf("%s at steady state: %+v (remote share %.2f): want every request served locally", s.Class, s, total)
			}
		}
	})

	t.Run("burst: Critical spills to the nearest region", func(t *testing.T) {
		// Capacity per region: 2 endpoints × 2 sequences, 16 tokens × 30 ms ≈ 8 requests/s.
		rs, err := r.Load(ctx, east, Load{Rate: 24, Duration: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		crit, be := summary(rs, "Critical"), summary(rs, "BestEffort")
		t.Logf("burst: critical %+v\nbesteffort %+v", crit, be)
		if crit.Requests == 0 || float64(crit.Succeeded)/float64(crit.Requests) < 0.99 {
			t.Errorf("critical success %d/%d: want ≥ 99%%", crit.Succeeded, crit.Requests)
		}
		// The nearest region is the first choice; the requests spilled between two capacity
		// reports spread by the targets' expected waits (docs/federation.md, "Choosing the
		// target"), so eu-west may take about as many.
		total, by := r.share(east, rs, "Critical")
		if total < 0.2 || by["us-west"] < total/3 {
			t.Errorf("critical served elsewhere: %.2f (%v): want a real share, at least a third of it in us-west", total, by)
		}
		if total, _ := r.share(east, rs, "Standard"); total > 0 {
			t.Errorf("standard left us-east (%.2f): it must stay", total)
		}
		if be.Statuses["429"] == 0 {
			t.Errorf("besteffort statuses %v: want some shed with 429", be.Statuses)
		}
	})

	t.Run("after the burst: spilling stops", func(t *testing.T) {
		// The spoke stops spilling once its pool has headroom again for the policy's minimum dwell.
		testkit.Eventually(t, 30*time.Second, "us-east stops spilling", r.spilling(ctx, east, false))
		rs, err := r.Load(ctx, east, Load{Rate: 2, Duration: 8 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if total, _ := r.share(east, rs, "Critical"); total > 0 {
			t.Errorf("critical still spilled %.2f after the burst", total)
		}
	})
	if t.Failed() {
		for _, p := range r.Fleet.Procs() {
			if strings.Contains(p.Name, "spoke-us-east") {
				b, _ := os.ReadFile(p.LogPath)
				s := string(b)
				t.Logf("%s log tail:\n%s", p.Name, s[max(0, len(s)-3000):])
			}
		}
	}
}

// TestKilledRegion: us-west, the nearest spill target, is killed while us-east bursts: it leaves
// us-east's targets within the 3 s target and receives nothing after that.
func TestKilledRegion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := start(t, ctx)
	detect, after, err := r.KillDuringLoad(ctx, r.Regions[0], r.Regions[1], Load{Rate: 24, Duration: 20 * time.Second}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("us-west left us-east's targets %.2fs after it was killed; %d requests went there after that", detect.Seconds(), after)
	if detect > 3*time.Second || after > 0 {
		t.Fatalf("detection %s, %d requests to the dead region after it: want ≤ 3s and none", detect, after)
	}
}

// TestFailures: the hub killed mid-burst (routing goes on, no Critical request fails); us-east's
// pool scaled to zero (Critical fails over, Standard gets 503); every region saturated at once
// (nothing spills).
func TestFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := start(t, ctx)
	east := r.Regions[0]

	t.Run("hub killed: routing goes on", func(t *testing.T) {
		var rs []loadgen.Result
		var loadErr error
		loaded := make(chan struct{})
		go func() {
			defer close(loaded)
			rs, loadErr = r.Load(ctx, east, Load{Rate: 24, Duration: 20 * time.Second})
		}()
		defer func() { <-loaded }() // the load ends before the subtest does, even one that fails early
		// The hub dies mid-burst, while us-east spills on the remote capacity it relays.
		testkit.Eventually(t, 15*time.Second, "us-east spills", r.spilling(ctx, east, true))
		r.Fleet.Hub.Kill()
		<-loaded
		if loadErr != nil {
			t.Fatal(loadErr)
		}
		crit := summary(rs, "Critical")
		if crit.Requests == 0 || float64(crit.Succeeded)/float64(crit.Requests) < 0.99 {
			t.Errorf("critical with the hub killed mid-burst: %d/%d served", crit.Succeeded, crit.Requests)
		}
		if err := r.Fleet.StartHub(); err != nil {
			t.Fatal(err)
		}
		if err := r.Fleet.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pool scaled to zero: Critical fails over", func(t *testing.T) {
		if err := r.Fleet.WritePools(east.Region, nil); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "us-east's spoke reads its empty pool", r.endpoints(ctx, east, 0))
		rs, err := r.Load(ctx, east, Load{Rate: 4, Duration: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		crit, std := summary(rs, "Critical"), summary(rs, "Standard")
		if total, _ := r.share(east, rs, "Critical"); crit.Requests == 0 || crit.Succeeded != crit.Requests || total < 0.99 {
			t.Errorf("critical with no local endpoint: %+v, remote share %.2f: want every one served elsewhere", crit, total)
		}
		if std.Statuses["503"] != std.Requests {
			t.Errorf("standard with no local endpoint: %v: want 503 for every request", std.Statuses)
		}
		if err := r.Fleet.WritePools(east.Region, east.Endpoints); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "us-east's spoke reads its endpoints back", r.endpoints(ctx, east, len(east.Endpoints)))
		testkit.Eventually(t, 10*time.Second, "us-east back to routing locally", r.spilling(ctx, east, false))
	})

	t.Run("whole fleet saturated: nothing spills", func(t *testing.T) {
		type out struct {
			rs  []loadgen.Result
			err error
		}
		stop := r.WatchTargets(ctx, east, 100*time.Millisecond)
		results := make(chan out, len(r.Regions))
		for _, reg := range r.Regions {
			go func() {
				rs, err := r.Load(ctx, reg, Load{Rate: 24, Duration: 20 * time.Second})
				results <- out{rs, err}
			}()
		}
		var eastRS []loadgen.Result
		for range r.Regions {
			o := <-results
			if o.err != nil {
				t.Fatal(o.err)
			}
			if len(o.rs) > 0 && o.rs[0].Target == "http://"+east.Gateway {
				eastRS = o.rs
			}
		}
		samples := stop()
		// While the others ramp up, the first seconds may still spill; afterwards the fleet is
		// saturated. A region under this load can still report headroom for a moment (a scrape
		// between two arrivals); a request may spill there then, and only then.
		from := eastRS[0].Start.Add(8 * time.Second)
		to := eastRS[len(eastRS)-1].Start
		var inWindow, open int
		for _, s := range samples {
			if s.At.After(from) && s.At.Before(to) {
				inWindow++
				if len(s.Regions) > 0 {
					open++
				}
			}
		}
		if inWindow == 0 || float64(open) > 0.5*float64(inWindow) {
			t.Fatalf("us-east's spoke listed spill targets in %d of %d samples after the ramp-up: the fleet was not saturated", open, inWindow)
		}
		var spilled, unlisted []string
		for _, res := range eastRS {
			reg := r.RemoteRegion(east, res)
			if res.Class != "Critical" || reg == "" || res.Start.Before(from) {
				continue
			}
			at := fmt.Sprintf("%s@%.1fs", reg, res.Start.Sub(eastRS[0].Start).Seconds())
			spilled = append(spilled, at)
			// Samples come every few hundred milliseconds (each is a curl in us-east's namespace): the
			// region must be listed in one taken from a second before the request to a quarter
			// second after it.
			if !slices.ContainsFunc(samples, func(s TargetSample) bool {
				return s.At.After(res.Start.Add(-time.Second)) && s.At.Before(res.Start.Add(250*time.Millisecond)) && slices.Contains(s.Regions, reg)
			}) {
				unlisted = append(unlisted, at)
			}
		}
		t.Logf("after the ramp-up: spill targets listed in %d of %d samples; Critical spilled %v", open, inWindow, spilled)
		if len(unlisted) > 0 {
			t.Errorf("Critical spilled to regions us-east's spoke did not list as having headroom: %v", unlisted)
		}
	})
}
