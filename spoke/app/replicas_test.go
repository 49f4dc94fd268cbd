package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	gieclient "sigs.k8s.io/gateway-api-inference-extension/client-go/clientset/versioned"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/spoke/kube"
)

// apiWrites sees a replica's requests to the API server: it keeps the writes (every method but
// GET) other than the Lease's, and cuts the replica off the Lease on demand, as a partition or a
// stalled leader would.
type apiWrites struct {
	blockLease atomic.Bool

	mu     sync.Mutex
	writes []string
}

func (w *apiWrites) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTrip(func(r *http.Request) (*http.Response, error) {
		lease := strings.Contains(r.URL.Path, "/leases")
		if lease && w.blockLease.Load() {
			return nil, errors.New("test: the Lease is out of this replica's reach")
		}
		if !lease && r.Method != http.MethodGet {
			w.mu.Lock()
			w.writes = append(w.writes, r.Method+" "+r.URL.Path)
			w.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (w *apiWrites) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// replica is one spoke replica of the test's cluster.
type replica struct {
	name   string
	http   string
	s      *spoke
	api    *apiWrites
	epp    *gateway.Client
	stop   func()
	leader func() bool
}

// startReplica runs a spoke of o, its API requests seen by a new apiWrites, until stop or the
// end of the test.
func startReplica(t *testing.T, name string, o *Options) *replica {
	t.Helper()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, api: &apiWrites{}}
	cfg.KubeConfig.WrapTransport = r.api.wrap
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ls.epp.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.s, r.http, r.epp = s, ls.http.Addr().String(), &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	r.leader = func() bool { return testutil.ToFloat64(s.metrics.leader) == 1 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, ls) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("replica %s: %v", name, err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// route sends one request through the replica's EPP and returns where it goes.
func (r *replica) route(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	call, d, err := r.epp.Request(ctx, []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/completions"},
		{Key: ":authority", Value: "gw"}, {Key: "content-type", Value: "application/json"}}, []byte(`{"model":"m","prompt":"hello"}`), nil)
	if err != nil {
		return "", err
	}
	call.Close()
	if d.Immediate != nil {
		return "", fmt.Errorf("replica %s answered %d %s", r.name, d.Immediate.Status, d.Immediate.Body)
	}
	return strings.Join(d.Destinations, ","), nil
}

// traffic routes requests through every replica given, in turn, until stopped; it counts
// those that did not reach want.
type traffic struct {
	sent, failed atomic.Int64
	lastErr      atomic.Value
	stop         func()
}

func startTraffic(reps []*replica, want string) *traffic {
	tr := &traffic{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			dest, err := reps[i%len(reps)].route(ctx)
			if ctx.Err() != nil {
				return
			}
			tr.sent.Add(1)
			if err == nil && dest != want {
				err = fmt.Errorf("replica %s routed to %q, want %s", reps[i%len(reps)].name, dest, want)
			}
			if err != nil {
				tr.failed.Add(1)
				tr.lastErr.Store(err.Error())
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	tr.stop = func() { cancel(); wg.Wait() }
	return tr
}

// imported checks that Spillway's import of inference/<pool> lists cluster a.
func imported(ctx context.Context, gie gieclient.Interface, pool string) func() error {
	return func() error {
		imp, err := gie.XInferenceV1alpha1().InferencePoolImports("inference").Get(ctx, pool, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("no import of %s yet", pool)
		}
		if err != nil {
			return err
		}
		for _, e := range imp.Status.Controllers {
			if string(e.Name) == kube.DefaultControllerName && len(e.ExportingClusters) == 1 && e.ExportingClusters[0].Name == "a" {
				return nil
			}
		}
		return fmt.Errorf("import of %s: %+v, want Spillway's entry exported by a", pool, imp.Status.Controllers)
	}
}

// TestReplicasElectOneWriter runs two spoke replicas of cluster a, as spoke/app builds them, on
// a real API server and a real hub, with a short Lease. One leads: it holds the full hub session
// and writes the import of the exported pool, while the other writes nothing to the API server
// but its Lease attempts. Both answer ext_proc all along, routing to the pool's endpoint. When the
// leader can no longer reach the Lease (a partition, a stalled process), it stops leading, and
// writing, before the other takes the Lease, within the lease duration and a retry; the new leader
// exports a pool added then and writes its import, while the old one writes nothing more. When
// the new leader stops, it releases the Lease, and the first replica takes it back in much less
// than a lease duration and writes again.
func TestReplicasElectOneWriter(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	api := apiserver.StartOne(ctx, t, "../..", "a")
	hub := hubtest.Start(t, 3*time.Second)
	sim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, simPage)
	}))
	defer sim.Close()
	_, port, _ := net.SplitHostPort(sim.Listener.Addr().String())
	var simPort int
	fmt.Sscan(port, &simPort)
	if err := api.SeedCluster(ctx, apiserver.Seed{ClusterID: "a", ClusterSet: "set", Namespace: "inference", Pool: "chat",
		TargetPort: simPort, EndpointIPs: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Kubectl(ctx, "create", "namespace", "spillway-system"); err != nil {
		t.Fatal(err)
	}
	gie := gieclient.NewForConfigOrDie(api.RESTConfig())
	le := LeaderElectionOptions{Enabled: true, Namespace: "spillway-system", LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}
	options := func() *Options {
		o := NewOptions()
		o.ClusterID, o.Region, o.Kubeconfig, o.EPPPool = "a", "r", api.Kubeconfig, "inference/chat"
		o.HubAddress, o.Trust.TrustDomain, o.Trust.CredentialsDir = hub.Addr, hubtest.TrustDomain, hub.CredentialsDir(hubtest.Cluster("a"))
		o.HTTPAddress, o.EPPAddress = "127.0.0.1:0", "127.0.0.1:0"
		o.Trust.EPPSecureServing, o.Trust.InsecureHTTP = false, true
		o.LeaderElection = le
		o.Log.Level = "error"
		return o
	}
	reps := []*replica{startReplica(t, "0", options()), startReplica(t, "1", options())}

	// Never two leaders at once: sampled all along.
	var both atomic.Bool
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for sampleCtx.Err() == nil {
			if reps[0].leader() && reps[1].leader() {
				both.Store(true)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() {
		stopSampling()
		sampling.Wait()
		if both.Load() {
			t.Error("both replicas led at once")
		}
	}()

	var leader, follower *replica
	testkit.Eventually(t, 60*time.Second, "one replica leads", func() error {
		switch {
		case reps[0].leader() && !reps[1].leader():
			leader, follower = reps[0], reps[1]
		case reps[1].leader() && !reps[0].leader():
			leader, follower = reps[1], reps[0]
		default:
			return fmt.Errorf("leader gauges %v, %v", reps[0].leader(), reps[1].leader())
		}
		return nil
	})
	testkit.Eventually(t, 60*time.Second, "the leader imports inference/chat", imported(ctx, gie, "chat"))
	if w := follower.api.list(); len(w) != 0 {
		t.Fatalf("the follower wrote to the API server: %q", w)
	}
	// The leader's hub session is the full one; the follower's an observer's, which keeps its
	// fleet view (and hop keys) all the same.
	if leader.s.client.Observer() || !follower.s.client.Observer() {
		t.Errorf("observer sessions: leader %v, follower %v; want false, true", leader.s.client.Observer(), follower.s.client.Observer())
	}
	testkit.Eventually(t, 30*time.Second, "the follower's view has the import", func() error {
		for _, imp := range follower.s.client.View().Imports() {
			if imp.Pool.Name == "chat" {
				return nil
			}
		}
		return fmt.Errorf("imports %+v", follower.s.client.View().Imports())
	})
	if len(leader.api.list()) == 0 {
		t.Fatal("the leader wrote nothing")
	}
	want := sim.Listener.Addr().String()
	testkit.Eventually(t, 30*time.Second, "both replicas route", func() error {
		for _, r := range reps {
			if dest, err := r.route(ctx); err != nil || dest != want {
				return fmt.Errorf("replica %s: %q, %v", r.name, dest, err)
			}
		}
		return nil
	})
	for _, r := range reps { // the follower serves ext_proc: it is ready too
		if code, err := httpGet("http://"+r.http+"/readyz", nil); err != nil || code != http.StatusOK {
			t.Errorf("replica %s: GET /readyz = %d, %v; want 200", r.name, code, err)
		}
	}
	tr := startTraffic(reps, want)

	// No import is deleted while leadership moves, twice: the hub stores the cluster's export set
	// again for the new leader's session, and the gap deletes nothing (kube.DefaultWithdrawDelay).
	w, err := gie.XInferenceV1alpha1().InferencePoolImports("inference").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var deleted atomic.Int64
	var watching sync.WaitGroup
	watching.Add(1)
	go func() {
		defer watching.Done()
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				deleted.Add(1)
			}
		}
	}()
	stopWatching := func() int64 { w.Stop(); watching.Wait(); return deleted.Load() }
	defer stopWatching()

	// The leader loses the Lease.
	leader.api.blockLease.Store(true)
	cut := time.Now()
	testkit.Eventually(t, 30*time.Second, "the other replica leads", func() error {
		if !follower.leader() {
			return errors.New("not yet")
		}
		return nil
	})
	if took, bound := time.Since(cut), le.LeaseDuration+2*le.RetryPeriod+2*time.Second; took > bound {
		t.Errorf("the Lease moved %s after the leader lost it, want within %s", took.Round(time.Millisecond), bound)
	}
	if leader.leader() {
		t.Fatal("the replica cut off the Lease still leads")
	}
	if !leader.s.client.Observer() || follower.s.client.Observer() {
		t.Errorf("after the failover, observer sessions: old leader %v, new leader %v; want true, false", leader.s.client.Observer(), follower.s.client.Observer())
	}
	stepped := len(leader.api.list())
	if _, err := api.KubectlStdin(ctx, `apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: code
  namespace: inference
  annotations: {inference.networking.x-k8s.io/export: ClusterSet}
spec:
  selector: {matchLabels: {app: code}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: spillway-spoke-epp, port: {number: 9002}}
`, "apply", "--server-side", "--field-manager=test", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "the new leader exports and imports inference/code", imported(ctx, gie, "code"))
	if w := leader.api.list(); len(w) != stepped {
		t.Errorf("the replica that lost the Lease wrote after it stopped leading: %q", w[stepped:])
	}
	tr.stop()
	if n, failed := tr.sent.Load(), tr.failed.Load(); n == 0 || failed != 0 {
		t.Errorf("%d of %d requests through the two replicas failed during the failover; last: %v", failed, n, tr.lastErr.Load())
	}

	// The new leader stops: it releases the Lease, and the first replica takes it back at once.
	leader.api.blockLease.Store(false)
	stopped := time.Now()
	follower.stop()
	testkit.Eventually(t, 30*time.Second, "the first replica leads again", func() error {
		if !leader.leader() {
			return errors.New("not yet")
		}
		return nil
	})
	if took := time.Since(stopped); took >= le.LeaseDuration {
		t.Errorf("the Lease moved %s after its leader stopped, want less than the lease duration %s: a stopping leader releases it", took.Round(time.Millisecond), le.LeaseDuration)
	}
	testkit.Eventually(t, 60*time.Second, "the first replica, leading again, keeps the imports", imported(ctx, gie, "code"))
	if n := stopWatching(); n != 0 {
		t.Errorf("%d imports were deleted while leadership moved", n)
	}
	if err := gie.XInferenceV1alpha1().InferencePoolImports("inference").Delete(ctx, "code", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "the leader writes the deleted import again", imported(ctx, gie, "code"))
	if dest, err := leader.route(ctx); err != nil || dest != want {
		t.Errorf("the leader routes to %q, %v; want %s", dest, err, want)
	}
}
