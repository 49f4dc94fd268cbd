// Package regions is the three-region end-to-end run (`make e2e`, `make bench-spill`): a
// management network namespace with the hub and three region namespaces, each with a spoke, a
// gateway, simulated model servers and a toxiproxy that gives the links between regions their
// latency. hack/regions.sh builds the namespaces (as root) and runs the tests and the benchmark;
// without it the tests skip.
//
// Every Spillway port runs with TLS, from the fleet's CA (e2e/localfleet): the hub's certificate
// names 10.77.0.1, the address the spokes dial it at; the spokes' /spill and /metrics are read
// over HTTPS with curl verifying them with the fleet CA.
package regions

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
)

// Region is one region of the run.
type Region struct {
	localfleet.Region
	// Index n: its namespace is <prefix>-r<n>, its address 10.77.<n>.1.
	Index int
}

// Names are the regions, in order.
var Names = []string{"us-east", "us-west", "eu-west"}

// oneWay is the latency toxiproxy adds to each direction between two regions: us-east–us-west
// 10 ms (20 ms round trip), to and from eu-west 40 ms (80 ms round trip).
var oneWay = map[[2]string]int{
	{"us-east", "us-west"}: 10, {"us-west", "us-east"}: 10,
	{"us-east", "eu-west"}: 40, {"eu-west", "us-east"}: 40,
	{"us-west", "eu-west"}: 40, {"eu-west", "us-west"}: 40,
}

// ProxyAddress is where every other region reaches region n's gateway: its local toxiproxy.
func ProxyAddress(n int) string { return fmt.Sprintf("127.0.0.1:%d", 18100+n) }

// Config describes a run.
type Config struct {
	// Prefix of the network namespaces hack/regions.sh created.
	Prefix  string
	BinDir  string
	WorkDir string
	// SpokeArgs are extra flags of every spoke (--spill=false for local-only routing).
	SpokeArgs []string
	// EPPConfig is added to every spoke's EPP configuration.
	EPPConfig string
	// HubArgs are extra hub flags.
	HubArgs []string
	// CriticalTTFT, when set, is the critical objective's latency objective in every EPP.
	CriticalTTFT time.Duration
}

// Run is a running fleet.
type Run struct {
	Config
	Fleet   *localfleet.Fleet
	Regions []Region
	proxies []*localfleet.Proc
}

// Start starts the fleet and the toxiproxies and waits until every region reports capacity.
func Start(ctx context.Context, c Config) (*Run, error) {
	r := &Run{Config: c}
	objectives := localfleet.EPPConfig
	if c.CriticalTTFT > 0 {
		objectives = localfleet.EPPConfigCriticalTTFT(c.CriticalTTFT)
	}
	o := localfleet.Options{BinDir: c.BinDir, WorkDir: c.WorkDir, HubNetns: c.Prefix + "-mgmt",
		HubGRPC: "10.77.0.1:8470", HubHTTP: "10.77.0.1:8471", HubAdmin: "10.77.0.1:8472", HubGossip: "10.77.0.1:7946", LeaseTTL: 5 * time.Second,
		SimArgs:   []string{"--max-num-seqs", "2", "--decode-latency", "30ms"},
		EPPConfig: objectives + "spill: {minDwell: 3s}\n" + c.EPPConfig, HubArgs: c.HubArgs}
	for i, name := range Names {
		n := i + 1
		reg := localfleet.Region{Name: name, Cluster: name + "-1", Netns: fmt.Sprintf("%s-r%d", c.Prefix, n),
			SpokeHTTP: "127.0.0.1:8481", EPP: "127.0.0.1:9002", Gateway: fmt.Sprintf("10.77.%d.1:8080", n),
			Gossip: fmt.Sprintf("10.77.%d.1:7946", n), Endpoints: []string{"127.0.0.1:8000", "127.0.0.2:8000"}}
		for j, other := range Names {
			if j != i {
				reg.SpokeArgs = append(reg.SpokeArgs, "--remote-gateway", fmt.Sprintf("%s-1=%s", other, ProxyAddress(j+1)))
			}
		}
		reg.SpokeArgs = append(reg.SpokeArgs, c.SpokeArgs...)
		r.Regions = append(r.Regions, Region{Region: reg, Index: n})
		o.Regions = append(o.Regions, reg)
	}
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		return nil, err
	}
	r.Fleet = f
	for _, reg := range r.Regions {
		if err := r.startToxiproxy(ctx, reg); err != nil {
			r.Stop()
			return nil, err
		}
	}
	if err := f.WaitReady(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// Stop stops every process of the run.
func (r *Run) Stop() {
	for _, p := range r.proxies {
		_ = p.Stop(5 * time.Second)
	}
	if r.Fleet != nil {
		r.Fleet.Stop()
	}
}

// startToxiproxy runs a toxiproxy in the region's namespace with one proxy per other region's
// gateway, latency on both directions.
func (r *Run) startToxiproxy(ctx context.Context, reg Region) error {
	p, err := r.Fleet.StartIn(reg.Netns, "toxiproxy-"+reg.Cluster, filepath.Join(r.BinDir, "toxiproxy-server"), "-host", "127.0.0.1", "-port", "8474")
	if err != nil {
		return err
	}
	r.proxies = append(r.proxies, p)
	api := func(path, body string) error {
		var last error
		// Polled until the server listens.
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
			out, err := r.Exec(ctx, reg.Netns, "curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
				"--data", body, "http://127.0.0.1:8474"+path)
			if err != nil {
				last = fmt.Errorf("%w: %s", err, out)
			}
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("toxiproxy in %s: %w (last: %v)", reg.Name, err, last)
		}
		return nil
	}
	for j, other := range Names {
		if other == reg.Name {
			continue
		}
		name := "to-" + other
		if err := api("/proxies", fmt.Sprintf(`{"name":%q,"listen":%q,"upstream":"10.77.%d.1:8080","enabled":true}`, name, ProxyAddress(j+1), j+1)); err != nil {
			return err
		}
		ms := oneWay[[2]string{reg.Name, other}]
		for _, stream := range []string{"upstream", "downstream"} {
			if err := api("/proxies/"+name+"/toxics", fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":1}}`, stream, stream, ms)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Exec runs a command in a namespace and returns its combined output.
func (r *Run) Exec(ctx context.Context, ns, bin string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...).CombinedOutput()
}

// SpokeGet reads path from a region's spoke over HTTPS, in the region's namespace, verifying the
// spoke with the fleet CA. It returns the body, or curl's output with the error.
func (r *Run) SpokeGet(ctx context.Context, reg Region, path string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", reg.Netns,
		"curl", "-sS", "--fail", "--cacert", r.Fleet.CAFile(), r.Fleet.SpokeURL(reg.Region, path)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("GET %s of %s: %w: %s", path, reg.Name, err, ee.Stderr)
		}
		return nil, fmt.Errorf("GET %s of %s: %w", path, reg.Name, err)
	}
	return out, nil
}

// Load is one loadgen run: the mix of every run (20 % Critical, 50 % Standard, 30 % BestEffort,
// 16 output tokens) unless Classes says otherwise.
type Load struct {
	Rate     float64
	Duration time.Duration
	// Targets are gateway addresses used in turn; the region's own gateway when empty.
	Targets []string
	// Prefixes long shared contexts of PrefixBytes each, the region's own being Home ([from,
	// to)) and used HomeShare of the time; loadgen's defaults when Prefixes is 0.
	Prefixes, PrefixBytes int
	Home                  [2]int
	HomeShare             float64
	// StreamShare is the fraction of streamed requests; loadgen's default when 0.
	StreamShare float64
	// Headers are added to every request.
	Headers map[string]string
	// Classes, when set, replace the mix (loadgen's --class NAME=OBJECTIVE:SHARE).
	Classes []string
}

// Load runs bin/loadgen in a region's namespace and returns every request's result.
func (r *Run) Load(ctx context.Context, reg Region, l Load) ([]loadgen.Result, error) {
	targets := l.Targets
	if len(targets) == 0 {
		targets = []string{reg.Gateway}
	}
	f, err := os.CreateTemp(r.WorkDir, "results-*.jsonl")
	if err != nil {
		return nil, err
	}
	f.Close()
	classes := l.Classes
	if len(classes) == 0 {
		classes = []string{"Critical=critical:0.2", "Standard=standard:0.5", "BestEffort=batch:0.3"}
	}
	args := []string{"--rate", fmt.Sprint(l.Rate), "--duration", l.Duration.String(), "--max-tokens", "16", "--results", f.Name()}
	for _, c := range classes {
		args = append(args, "--class", c)
	}
	for _, t := range targets {
		args = append(args, "--target", "http://"+t)
	}
	if l.Prefixes > 0 {
		args = append(args, "--prefixes", fmt.Sprint(l.Prefixes), "--prefix-bytes", fmt.Sprint(l.PrefixBytes),
			"--home-prefix-from", fmt.Sprint(l.Home[0]), "--home-prefix-to", fmt.Sprint(l.Home[1]), "--home-share", fmt.Sprint(l.HomeShare))
	}
	if l.StreamShare > 0 {
		args = append(args, "--stream-share", fmt.Sprint(l.StreamShare))
	}
	for k, v := range l.Headers {
		args = append(args, "--header", k+"="+v)
	}
	if out, err := r.Exec(ctx, reg.Netns, filepath.Join(r.BinDir, "loadgen"), args...); err != nil {
		return nil, fmt.Errorf("loadgen in %s: %w\n%s", reg.Name, err, out)
	}
	rf, err := os.Open(f.Name())
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	var rs []loadgen.Result
	sc := bufio.NewScanner(rf)
	for sc.Scan() {
		var res loadgen.Result
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			return nil, fmt.Errorf("loadgen result: %w", err)
		}
		rs = append(rs, res)
	}
	return rs, sc.Err()
}

// RemoteRegion names the region that served a request of region from, "" when served locally:
// through a toxiproxy (spilled by the EPP), or sent by the client to another gateway.
func (r *Run) RemoteRegion(from Region, res loadgen.Result) string {
	for _, reg := range r.Regions {
		if reg.Index == from.Index {
			continue
		}
		if res.Served == ProxyAddress(reg.Index) || res.Target == "http://"+ProxyAddress(reg.Index) {
			return reg.Name
		}
	}
	return ""
}

// KillDuringLoad sends load from region from and kills every process of region victim after
// killAt. It returns how long from's spoke kept victim among its spill targets (GET /spill,
// watched from the kill to the end of the load) after the kill, and how many of from's requests
// were served through victim after that.
func (r *Run) KillDuringLoad(ctx context.Context, from, victim Region, l Load, killAt time.Duration) (time.Duration, int, error) {
	type loadResult struct {
		rs  []loadgen.Result
		err error
	}
	done := make(chan loadResult, 1)
	go func() {
		rs, err := r.Load(ctx, from, l)
		done <- loadResult{rs, err}
	}()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(killAt):
	}
	for _, proc := range r.Fleet.Procs() {
		for _, p := range []string{"gateway-", "spoke-", "modelsim-"} {
			if proc.Name == p+victim.Cluster {
				proc.Kill()
			}
		}
	}
	killed := time.Now()
	stop := r.WatchTargets(ctx, from, 50*time.Millisecond)
	lr := <-done
	samples := stop()
	if lr.err != nil {
		return 0, 0, lr.err
	}
	var detected time.Time
	for _, smp := range samples {
		if !slices.Contains(smp.Regions, victim.Name) {
			detected = smp.At
			break
		}
	}
	if detected.IsZero() {
		return 0, 0, fmt.Errorf("%s never left %s's spill targets", victim.Name, from.Name)
	}
	after := 0
	for _, res := range lr.rs {
		if res.Start.After(detected) && res.Served == ProxyAddress(victim.Index) {
			after++
		}
	}
	return detected.Sub(killed), after, nil
}

// TargetSample is what a spoke's GET /spill listed as usable spill targets at one moment.
type TargetSample struct {
	At      time.Time
	Regions []string
}

// WatchTargets polls from's spoke for its spill targets every interval until the returned stop is
// called, which returns the samples.
func (r *Run) WatchTargets(ctx context.Context, from Region, every time.Duration) (stop func() []TargetSample) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan []TargetSample, 1)
	go func() {
		var out []TargetSample
		defer func() { done <- out }()
		for ctx.Err() == nil {
			body, err := r.SpokeGet(ctx, from, "/spill")
			var s struct {
				Targets []struct{ Region string } `json:"targets"`
			}
			if err == nil && json.Unmarshal(body, &s) == nil {
				smp := TargetSample{At: time.Now()}
				for _, t := range s.Targets {
					smp.Regions = append(smp.Regions, t.Region)
				}
				out = append(out, smp)
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	return func() []TargetSample {
		cancel()
		return <-done
	}
}
