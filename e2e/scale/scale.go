// Package scale is the load driver of `make bench-scale`: one real hub process (embedded etcd,
// mutual TLS) and N simulated spokes, each a goroutine with a gRPC connection and a cluster
// certificate of its own, that register, export their pools, report capacity on a fixed period
// and, for a fraction of them, import every pool of the fleet. It measures the fleet view's
// staleness end to end (a report's stamp on the driver's monotonic clock to its arrival at each
// importing spoke), the hub's CPU and memory, etcd's write rate, `hubctl get pools`, and how
// long the fleet takes to come back after a hub restart.
package scale

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/e2e/etcdcluster"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Options describe one run.
type Options struct {
	// BinDir holds the hub and hubctl binaries; WorkDir receives the hub's data and logs.
	BinDir, WorkDir string
	// ProfileDir, when set, receives the hub's CPU and heap profiles of the steady state, and of
	// the 20 s after its restart; ProfileTag goes before the fleet size in their names.
	ProfileDir, ProfileTag string
	// Spokes is the number of simulated spokes; each exports Pools pools of Endpoints
	// endpoints and reports their capacity every ReportInterval.
	Spokes, Pools, Endpoints int
	ReportInterval           time.Duration
	// ReportEndpoints sends per-endpoint detail with each report (a spoke's --report-endpoints).
	ReportEndpoints bool
	// ImportFraction of the spokes import every pool: they want every pool's capacity.
	// Importers, when positive, is their number instead.
	ImportFraction float64
	Importers      int
	// Observers is how many of the importing spokes measure staleness (every importer when
	// zero). The others read what they act on and skip the reports: what the hub sends them is
	// the same, and the driver beside the hub costs the machine less.
	Observers int
	// Settle is how long the fleet runs once converged before Measure, the steady-state window.
	Settle, Measure time.Duration
	// ConvergeTimeout bounds the wait for every spoke to converge, at the start and after the
	// hub's restart.
	ConvergeTimeout time.Duration
	// Restart measures a mass reconnect: the hub is stopped and started again.
	Restart bool
	// Replicas is the number of hub replicas (1 when zero). More than one run on a three-member
	// etcd cluster of EtcdBin, and each spoke tries them in an order of its own, as
	// spoke/hubclient does with a list of addresses.
	Replicas int
	EtcdBin  string
	// HubArgs are further hub flags.
	HubArgs []string
	Log     *slog.Logger
}

// Result holds one run's figures, as docs/benchmarks/scale.json carries them.
type Result struct {
	Spokes           int     `json:"spokes"`
	Pools            int     `json:"pools"`
	Importers        int     `json:"importers"`
	Observers        int     `json:"observers"`
	StalenessP50Ms   float64 `json:"staleness_p50_ms"`
	StalenessP99Ms   float64 `json:"staleness_p99_ms"`
	StalenessSamples int64   `json:"staleness_samples"`
	// WatchStaleness is the same measure for `hubctl get pools -w -o json`, run beside the
	// spokes: whether the admin watch keeps up.
	WatchStalenessP50Ms float64 `json:"watch_staleness_p50_ms"`
	WatchStalenessP99Ms float64 `json:"watch_staleness_p99_ms"`
	WatchSamples        int64   `json:"watch_samples"`
	HubCPUCores         float64 `json:"hub_cpu_cores"`
	HubRSSMiB           float64 `json:"hub_rss_mib"`
	DriverCPUCores      float64 `json:"driver_cpu_cores"`
	EtcdWritesPerS      float64 `json:"etcd_writes_per_s"`
	ConnectConvergeS    float64 `json:"connect_converge_s"`
	ReconnectConvergeS  float64 `json:"reconnect_converge_s"`
	// ReconnectSnapshots is how many view snapshots the replicas sent from the restart until
	// every spoke converged; ReconnectEtcdWrites how many etcd writes were made meanwhile.
	ReconnectSnapshots  float64 `json:"reconnect_snapshots"`
	ReconnectEtcdWrites float64 `json:"reconnect_etcd_writes"`
	// ReconnectOpenMeanMs is how long a session held its admission slot on average (from the
	// slot to its first view update), over the sessions the replicas opened since they started.
	ReconnectOpenMeanMs float64 `json:"reconnect_open_mean_ms"`
	HubctlGetPoolsMs    float64 `json:"hubctl_get_pools_ms"`
	// SessionsEnded counts sessions that broke outside the restart.
	SessionsEnded int64 `json:"sessions_ended"`
	// With several replicas: HubCPUCores is their sum and HubRSSMiB their largest; PerReplica
	// says what each held in the steady state, and the restart is the first replica's.
	Replicas   int             `json:"replicas"`
	PerReplica []ReplicaResult `json:"per_replica,omitempty"`
	// Error says why the run stopped short; the figures before it stand.
	Error string `json:"error,omitempty"`
}

// ReplicaResult is one hub replica's share of the steady state.
type ReplicaResult struct {
	HubID    string  `json:"hub_id"`
	Sessions float64 `json:"sessions"`
	CPUCores float64 `json:"cpu_cores"`
	RSSMiB   float64 `json:"rss_mib"`
}

// driver holds what the simulated spokes share.
type driver struct {
	opts     Options
	hubs     []*hub
	allPools []*pb.PoolRef
	start    time.Time // wall and monotonic reading at the driver's start

	measuring     atomic.Bool
	staleness     hist
	watch         hist
	sessionsEnded atomic.Int64
	lastErr       atomic.Value
}

// mono is the time since the driver started, on the monotonic clock.
func (d *driver) mono() time.Duration { return time.Since(d.start) }

// stamp is now as a report's observed_at: the driver's start plus its monotonic age, so that
// the difference of two stamps is a monotonic duration.
func (d *driver) stamp() *timestamppb.Timestamp { return timestamppb.New(d.start.Add(d.mono())) }

func (d *driver) fromStamp(ts *timestamppb.Timestamp) time.Duration { return ts.AsTime().Sub(d.start) }

// Run runs one fleet of opts.Spokes spokes against a new hub process and returns its figures.
func Run(ctx context.Context, opts Options) (Result, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	ca, err := tlsconfig.NewCA("scale bench CA", 24*time.Hour)
	if err != nil {
		return Result{}, err
	}
	opts.Replicas = max(opts.Replicas, 1)
	d := &driver{opts: opts, start: time.Now()}
	hubArgs := opts.HubArgs
	if opts.Replicas > 1 {
		dir := filepath.Join(opts.WorkDir, "etcd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return Result{}, err
		}
		etcd, err := etcdcluster.StartContext(ctx, etcdcluster.Options{Members: 3, Bin: opts.EtcdBin, Dir: dir, Fsync: true})
		if err != nil {
			return Result{}, err
		}
		defer etcd.Stop()
		hubArgs = append(etcd.HubArgs(), hubArgs...)
	}
	for i := range opts.Replicas {
		dir := filepath.Join(opts.WorkDir, fmt.Sprintf("hub-%d", i))
		h, err := newHub(fmt.Sprintf("hub-%d", i), opts.BinDir, dir, ca, hubArgs)
		if err != nil {
			return Result{}, err
		}
		if err := h.start(ctx); err != nil {
			return Result{}, err
		}
		defer func() {
			if err := h.stop(); err != nil {
				log.Warn("hub stop", "hub", h.id, "err", err)
			}
		}()
		d.hubs = append(d.hubs, h)
	}
	spokes, err := d.spokes(ca)
	if err != nil {
		return Result{}, err
	}
	res := Result{Spokes: opts.Spokes, Pools: len(d.allPools), Replicas: opts.Replicas}
	for _, s := range spokes {
		if s.importer {
			res.Importers++
		}
		if s.observer {
			res.Observers++
		}
	}

	runCtx, stopSpokes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopSpokes()
		wg.Wait()
	}()
	began := time.Now()
	for _, s := range spokes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(runCtx)
		}()
	}
	connectProfiled := d.profileSlowConnect(ctx)
	err = d.converge(ctx, spokes, opts.ConvergeTimeout)
	res.ConnectConvergeS = time.Since(began).Seconds()
	if perr := connectProfiled(); err == nil {
		err = perr
	}
	if err != nil {
		return res, fmt.Errorf("first connect: %w", err)
	}
	log.Info("fleet converged", "spokes", opts.Spokes, "seconds", res.ConnectConvergeS)

	if err := sleep(ctx, opts.Settle); err != nil {
		return res, err
	}
	if err := d.steady(ctx, &res); err != nil {
		return res, err
	}
	if opts.ProfileDir != "" {
		tag := fmt.Sprintf("%s%d", opts.ProfileTag, opts.Spokes)
		// The driver's own CPU profile over the same window: what the simulated spokes cost.
		stop, err := profileSelf(filepath.Join(opts.ProfileDir, fmt.Sprintf("driver-%s-cpu.pprof", tag)))
		if err != nil {
			return res, err
		}
		err = d.hubs[0].profile(ctx, opts.ProfileDir, tag, min(opts.Measure, 20*time.Second))
		if serr := stop(); err == nil {
			err = serr
		}
		if err != nil {
			return res, err
		}
	}
	if res.HubctlGetPoolsMs, err = d.hubctlGetPools(ctx); err != nil {
		return res, err
	}
	res.SessionsEnded = d.sessionsEnded.Load()
	if opts.Restart {
		if err := d.restart(ctx, spokes, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// spokes makes the simulated spokes, each with its own certificate.
func (d *driver) spokes(ca *tlsconfig.CA) ([]*simSpoke, error) {
	o := d.opts
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	rng := mrand.New(mrand.NewPCG(1, 2))
	importers := int(o.ImportFraction*float64(o.Spokes) + 0.5)
	if o.Importers > 0 {
		importers = min(o.Importers, o.Spokes)
	}
	regions := []string{"us-east", "us-west", "eu-west", "eu-north", "ap-south"}
	out := make([]*simSpoke, 0, o.Spokes)
	nImporters := 0
	for i := range o.Spokes {
		id := fmt.Sprintf("c%05d", i)
		certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: id}, nil, nil, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		var inc [8]byte
		_, _ = rand.Read(inc[:])
		s := &simSpoke{
			d: d, id: id, index: i, addrs: d.addressOrder(rng), importer: importers > 0 && i%max(1, o.Spokes/importers) == 0,
			info:        &pb.ClusterInfo{ClusterId: id, Region: regions[i%len(regions)], GatewayAddress: id + ".gw.bench.local:443", Version: "bench"},
			tls:         &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: serverName, Certificates: []tls.Certificate{cert}},
			incarnation: hex.EncodeToString(inc[:]),
			rng:         mrand.New(mrand.NewPCG(rng.Uint64(), rng.Uint64())),
		}
		if s.importer {
			// Spread over the importers: every k-th of them observes.
			s.observer = o.Observers <= 0 || nImporters%max(1, importers/o.Observers) == 0
			nImporters++
		}
		for j := range o.Pools {
			p := &pb.PoolRef{Namespace: "bench", Name: fmt.Sprintf("%s-pool-%d", id, j)}
			s.exports = append(s.exports, &pb.Export{Pool: p, TargetPorts: []uint32{8000}, Labels: map[string]string{"app": "bench"}})
			d.allPools = append(d.allPools, p)
		}
		out = append(out, s)
	}
	return out, nil
}

// addressOrder is one spoke's order of the replicas' addresses, a random one as each
// spoke/hubclient shuffles its list, so that the spokes spread over the replicas.
func (d *driver) addressOrder(rng *mrand.Rand) []string {
	out := make([]string, 0, len(d.hubs))
	for _, h := range d.hubs {
		out = append(out, h.grpc)
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// slowConnect is how long the first connection may take before the hub is profiled over it.
const slowConnect = 30 * time.Second

// profileSlowConnect profiles the hub for 30 s when the first connection of the fleet is not
// done within slowConnect. done says that it is, and waits for a profile begun.
func (d *driver) profileSlowConnect(ctx context.Context) (done func() error) {
	if d.opts.ProfileDir == "" {
		return func() error { return nil }
	}
	finished := make(chan struct{})
	profiled := make(chan error, 1)
	go func() {
		t := time.NewTimer(slowConnect)
		defer t.Stop()
		select {
		case <-finished:
			profiled <- nil
			return
		case <-ctx.Done():
			profiled <- nil
			return
		case <-t.C:
		}
		d.opts.Log.Info("profiling the connection", "spokes", d.opts.Spokes)
		profiled <- d.hubs[0].profile(ctx, d.opts.ProfileDir, fmt.Sprintf("%s%d-connect", d.opts.ProfileTag, d.opts.Spokes), 30*time.Second)
	}()
	return func() error {
		close(finished)
		return <-profiled
	}
}

func converged(spokes []*simSpoke) int {
	n := 0
	for _, s := range spokes {
		if s.converged.Load() {
			n++
		}
	}
	return n
}

// converge waits until every spoke holds a session whose exports are acknowledged and whose
// view came complete, and logs the count as it goes.
func (d *driver) converge(ctx context.Context, spokes []*simSpoke, timeout time.Duration) error {
	began := time.Now()
	deadline := began.Add(timeout)
	next := began.Add(15 * time.Second)
	for {
		n := converged(spokes)
		if n == len(spokes) {
			return nil
		}
		if time.Now().After(next) {
			next = next.Add(15 * time.Second)
			d.opts.Log.Info("fleet converging", "converged", n, "spokes", len(spokes), "seconds", int(time.Since(began).Seconds()), "sessions_ended", d.sessionsEnded.Load())
		}
		if time.Now().After(deadline) {
			last, _ := d.lastErr.Load().(string)
			return fmt.Errorf("%d of %d spokes converged after %s (last session error: %s)", n, len(spokes), timeout, last)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// steady measures the steady state over opts.Measure.
func (d *driver) steady(ctx context.Context, res *Result) error {
	rev0, err := d.hubs[0].metric(ctx, "spillway_hub_registry_revision")
	if err != nil {
		return err
	}
	hub0, err := d.usage()
	if err != nil {
		return err
	}
	self0, err := usageOf(os.Getpid())
	if err != nil {
		return err
	}
	d.staleness.reset()
	d.watch.reset()
	stopWatch, err := d.watchPools(ctx)
	if err != nil {
		return err
	}
	defer stopWatch()
	d.measuring.Store(true)
	peak := make([]int64, len(d.hubs))
	end := time.Now().Add(d.opts.Measure)
	for time.Now().Before(end) {
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
		us, err := d.usage()
		if err != nil {
			return err
		}
		for i, u := range us {
			peak[i] = max(peak[i], u.rss)
		}
	}
	d.measuring.Store(false)
	hub1, err := d.usage()
	if err != nil {
		return err
	}
	self1, err := usageOf(os.Getpid())
	if err != nil {
		return err
	}
	rev1, err := d.hubs[0].metric(ctx, "spillway_hub_registry_revision")
	if err != nil {
		return err
	}
	res.DriverCPUCores = cores(self0, self1)
	res.PerReplica = nil
	for i, h := range d.hubs {
		r := ReplicaResult{HubID: h.id, CPUCores: cores(hub0[i], hub1[i]), RSSMiB: float64(max(peak[i], hub1[i].rss)) / (1 << 20)}
		if r.Sessions, err = h.metric(ctx, "spillway_hub_sync_sessions"); err != nil {
			return err
		}
		res.HubCPUCores += r.CPUCores
		res.HubRSSMiB = max(res.HubRSSMiB, r.RSSMiB)
		res.PerReplica = append(res.PerReplica, r)
	}
	if len(d.hubs) == 1 {
		res.PerReplica = nil
	}
	res.EtcdWritesPerS = (rev1 - rev0) / hub1[0].at.Sub(hub0[0].at).Seconds()
	res.StalenessSamples = d.staleness.count()
	res.StalenessP50Ms = ms(d.staleness.quantile(0.50))
	res.StalenessP99Ms = ms(d.staleness.quantile(0.99))
	res.WatchSamples = d.watch.count()
	res.WatchStalenessP50Ms = ms(d.watch.quantile(0.50))
	res.WatchStalenessP99Ms = ms(d.watch.quantile(0.99))
	return nil
}

// usage reads every replica's CPU time and memory.
func (d *driver) usage() ([]usage, error) {
	out := make([]usage, 0, len(d.hubs))
	for _, h := range d.hubs {
		u, err := usageOf(h.proc.Pid())
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// watchPools runs `hubctl get pools -w -o json` and records how old each capacity report of
// its deltas is when it reads it, until the returned stop.
func (d *driver) watchPools(ctx context.Context) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, filepath.Join(d.opts.BinDir, "hubctl"), d.hubctlArgs("get", "pools", "-w", "-o", "json")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(out)
		for {
			var u struct {
				Snapshot bool
				Capacity []struct {
					Capacity struct{ ObservedAt time.Time }
				}
			}
			if err := dec.Decode(&u); err != nil {
				return
			}
			if u.Snapshot || !d.measuring.Load() {
				continue
			}
			now := d.mono()
			for _, rc := range u.Capacity {
				d.watch.record(now - rc.Capacity.ObservedAt.Sub(d.start))
			}
		}
	}()
	return func() {
		cancel()
		<-done
		_ = cmd.Wait()
	}, nil
}

func (d *driver) hubctlArgs(args ...string) []string {
	h := d.hubs[0]
	return append([]string{"--hub", h.admin, "--credentials-dir", filepath.Join(h.dir, "pki", "hubctl"), "--tls-server-name", serverName}, args...)
}

// hubctlGetPools runs `hubctl get pools` five times and returns the median wall time, after
// checking that it listed every pool.
func (d *driver) hubctlGetPools(ctx context.Context) (float64, error) {
	var times []float64
	for range 5 {
		cmd := exec.CommandContext(ctx, filepath.Join(d.opts.BinDir, "hubctl"), d.hubctlArgs("get", "pools")...)
		began := time.Now()
		out, err := cmd.Output()
		took := time.Since(began)
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return 0, fmt.Errorf("hubctl get pools: %w: %s", err, ee.Stderr)
			}
			return 0, fmt.Errorf("hubctl get pools: %w", err)
		}
		if rows := strings.Count(string(out), "\n") - 1; rows < len(d.allPools) {
			return 0, fmt.Errorf("hubctl get pools listed %d rows, want %d", rows, len(d.allPools))
		}
		times = append(times, ms(took))
	}
	sort.Float64s(times)
	return times[len(times)/2], nil
}

// restart stops the (first) hub replica and starts it again on the same data, and measures how
// long the fleet takes to converge from the new process's start. With one replica every spoke
// reconnects to it at once; with several, its spokes move to the others meanwhile.
func (d *driver) restart(ctx context.Context, spokes []*simSpoke, res *Result) error {
	h := d.hubs[0]
	rev0, err := h.metric(ctx, "spillway_hub_registry_revision")
	if err != nil {
		return err
	}
	snapshots := func(hubs []*hub) (float64, error) {
		sum := 0.0
		for _, h := range hubs {
			n, err := h.metric(ctx, "spillway_hub_view_updates_sent_total", `kind="snapshot"`)
			if err != nil {
				return 0, err
			}
			sum += n
		}
		return sum, nil
	}
	before, err := snapshots(d.hubs[1:]) // the restarted replica's count starts again at 0
	if err != nil {
		return err
	}
	if err := h.stop(); err != nil {
		d.opts.Log.Warn("hub stop", "err", err)
	}
	began := time.Now()
	if err := h.start(ctx); err != nil {
		return err
	}
	// The restarted hub's profiles over the reconnection, beside the steady state's.
	profiled := make(chan error, 1)
	if d.opts.ProfileDir != "" {
		go func() {
			profiled <- h.profile(ctx, d.opts.ProfileDir, fmt.Sprintf("%s%d-restart", d.opts.ProfileTag, d.opts.Spokes), 20*time.Second)
		}()
	} else {
		profiled <- nil
	}
	if err := d.converge(ctx, spokes, d.opts.ConvergeTimeout); err != nil {
		return fmt.Errorf("after the hub's restart: %w", err)
	}
	res.ReconnectConvergeS = time.Since(began).Seconds()
	if err := <-profiled; err != nil {
		return err
	}
	after, err := snapshots(d.hubs)
	if err != nil {
		return err
	}
	res.ReconnectSnapshots = after - before
	rev1, err := h.metric(ctx, "spillway_hub_registry_revision")
	if err != nil {
		return err
	}
	res.ReconnectEtcdWrites = rev1 - rev0
	// How long the restarted replica's sessions took to open (admission slot to first view).
	var n, sum float64
	for _, h := range d.hubs {
		c, err := h.metric(ctx, "spillway_hub_sync_session_open_duration_seconds_count")
		if err != nil {
			return err
		}
		s, err := h.metric(ctx, "spillway_hub_sync_session_open_duration_seconds_sum")
		if err != nil {
			return err
		}
		n, sum = n+c, sum+s
	}
	if n > 0 {
		res.ReconnectOpenMeanMs = math.Round(10000*sum/n) / 10
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// profileSelf starts this process's CPU profile into path; stop ends it.
func profileSelf(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("profile the driver: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
