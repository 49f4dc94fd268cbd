package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	apixv1alpha1 "sigs.k8s.io/gateway-api-inference-extension/apix/v1alpha1"
	gieclient "sigs.k8s.io/gateway-api-inference-extension/client-go/clientset/versioned"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/hubclient"
	spokekube "github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/source"
)

const ns = "inference"

// k8sCluster is one simulated workload cluster: a real API server and an in-process spoke
// (its Kubernetes controller and hub client, the parts under test).
type k8sCluster struct {
	id   string
	api  *apiserver.Cluster
	kube kubernetes.Interface
	gie  gieclient.Interface
	mcs  mcsclient.Interface
	ctrl *spokekube.Controller
	hub  *hubclient.Client
	stop func()
}

// startAPIServers starts one API server per name, in parallel, with Spillway's CRDs installed.
func startAPIServers(t *testing.T, ctx context.Context, names ...string) map[string]*apiserver.Cluster {
	t.Helper()
	bins, err := apiserver.FindBins("..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := apiserver.StartWithCRDs(ctx, bins, t.TempDir(), "..", names...)
	t.Cleanup(func() {
		for _, c := range out {
			c.Stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newK8sCluster(t *testing.T, id string, api *apiserver.Cluster) *k8sCluster {
	t.Helper()
	rc := api.RESTConfig()
	c := &k8sCluster{id: id, api: api}
	c.kube = kubernetes.NewForConfigOrDie(rc)
	c.gie = gieclient.NewForConfigOrDie(rc)
	c.mcs = mcsclient.NewForConfigOrDie(rc)
	return c
}

// startSpoke runs the cluster's controller and hub client (over mutual TLS with the cluster's
// certificate) until the test ends or c.stop.
func (c *k8sCluster) startSpoke(t *testing.T, hub *hubtest.Hub, opts spokekube.Options) {
	t.Helper()
	c.hub = hubclient.New(hubclient.Options{
		Cluster:    fleet.ClusterInfo{ID: c.id, Region: "region-" + c.id, GatewayAddress: "gateway." + c.id + ".test:8080"},
		HubAddress: hub.Addr, TLS: hub.ClientTLS(hubtest.Cluster(c.id)), MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	})
	opts.Config = c.api.RESTConfig()
	opts.ClusterID = c.id
	opts.View, opts.Reporter = c.hub.View(), c.hub
	opts.Resync = 2 * time.Second
	ctrl, err := spokekube.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.ctrl = ctrl
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = c.hub.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := ctrl.Run(ctx); err != nil {
			t.Errorf("controller of %s: %v", c.id, err)
		}
	}()
	// The spoke's export loop, as spoke/app runs it: local pools → exports.
	go func() {
		defer wg.Done()
		for {
			ch := ctrl.Changed()
			c.hub.SetExports(source.Exports(ctrl.Pools()))
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
	var once sync.Once
	c.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(c.stop)
}

func (c *k8sCluster) apply(t *testing.T, ctx context.Context, manifest string) {
	t.Helper()
	if _, err := c.api.KubectlStdin(ctx, manifest, "apply", "--server-side", "--field-manager=test", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// readyPod creates a Pod and sets its status as a kubelet would.
func (c *k8sCluster) readyPod(t *testing.T, ctx context.Context, name, ip string, lbls map[string]string, ready bool) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: "node", Containers: []corev1.Container{{Name: "server", Image: "vllm"}}},
	}
	created, err := c.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
	if _, err := c.kube.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func poolManifest(name, export string) string {
	ann := ""
	if export != "" {
		ann = fmt.Sprintf("\n  annotations:\n    inference.networking.x-k8s.io/export: %q", export)
	}
	return fmt.Sprintf(`apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %s
  namespace: %s%s
spec:
  selector:
    matchLabels: {app: %s}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: spillway-spoke-epp, port: {number: 9002}}
`, name, ns, ann, name)
}

// exportingClusters returns the exporting clusters of Spillway's entry in the import, nil when the
// import does not exist.
func (c *k8sCluster) exportingClusters(ctx context.Context, pool string) ([]string, error) {
	imp, err := c.gie.XInferenceV1alpha1().InferencePoolImports(ns).Get(ctx, pool, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range imp.Status.Controllers {
		if e.Name == spokekube.DefaultControllerName {
			var out []string
			for _, x := range e.ExportingClusters {
				out = append(out, string(x.Name))
			}
			return out, nil
		}
	}
	return []string{}, nil
}

func (c *k8sCluster) exported(ctx context.Context, pool string) (*metav1.Condition, []giev1.ParentStatus, error) {
	p, err := c.gie.InferenceV1().InferencePools(ns).Get(ctx, pool, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	for _, ps := range p.Status.Parents {
		if ps.ControllerName == spokekube.DefaultControllerName {
			if ps.ParentRef.Kind != "InferencePoolImport" || string(ps.ParentRef.Name) != pool || ps.ParentRef.Namespace != ns ||
				ps.ParentRef.Group == nil || *ps.ParentRef.Group != apixv1alpha1.GroupName {
				return nil, nil, fmt.Errorf("parentRef %+v: want InferencePoolImport %s/%s", ps.ParentRef, ns, pool)
			}
			return meta.FindStatusCondition(ps.Conditions, "Exported"), p.Status.Parents, nil
		}
	}
	return nil, p.Status.Parents, nil
}

func wantImport(ctx context.Context, c *k8sCluster, pool string, want ...string) func() error {
	return func() error {
		got, err := c.exportingClusters(ctx, pool)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: import %s exported by %v, want %v", c.id, pool, got, want)
		}
		return nil
	}
}

func wantExported(ctx context.Context, c *k8sCluster, pool string, status metav1.ConditionStatus, reason, msgPart string) func() error {
	return func() error {
		cond, _, err := c.exported(ctx, pool)
		if err != nil {
			return err
		}
		if cond == nil {
			return fmt.Errorf("%s: pool %s has no Exported condition", c.id, pool)
		}
		if cond.Status != status || cond.Reason != reason || !strings.Contains(cond.Message, msgPart) {
			return fmt.Errorf("%s: pool %s Exported=%s/%s %q, want %s/%s containing %q", c.id, pool, cond.Status, cond.Reason, cond.Message, status, reason, msgPart)
		}
		return nil
	}
}

func wantEvent(ctx context.Context, c *k8sCluster, reason, objName string) func() error {
	return func() error {
		evs, err := c.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.InvolvedObject.Name == objName && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("%s: no %s warning event on %s among %d events", c.id, reason, objName, len(evs.Items))
	}
}

// TestKubernetesExportImport runs three real API servers, one hub and three spokes, and walks a
// pool through export, import in every cluster, a second exporter, withdrawal, a spoke losing
// its API server, and the objects a spoke must refuse without failing.
func TestKubernetesExportImport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	apis := startAPIServers(t, ctx, "a", "b", "c")
	hub := hubtest.Start(t, 3*time.Second)
	a, b, c := newK8sCluster(t, "a", apis["a"]), newK8sCluster(t, "b", apis["b"]), newK8sCluster(t, "c", apis["c"])

	// Namespace "inference" exists in a alone: b's spoke may create it, c's may not.
	for _, cl := range []*k8sCluster{a} {
		if _, err := cl.api.Kubectl(ctx, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}
	// Another controller (a gateway) already has a parent status on a's pool: Spillway must keep it.
	a.apply(t, ctx, poolManifest("chat", ""))
	gwGroup := giev1.Group("gateway.networking.k8s.io")
	pool, err := a.gie.InferenceV1().InferencePools(ns).Get(ctx, "chat", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool.Status.Parents = []giev1.ParentStatus{{
		ParentRef:      giev1.ParentReference{Group: &gwGroup, Kind: "Gateway", Name: "inference-gateway"},
		ControllerName: "example.com/gateway-controller",
		Conditions:     []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}},
	}}
	if _, err := a.gie.InferenceV1().InferencePools(ns).UpdateStatus(ctx, pool, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.readyPod(t, ctx, "chat-0", "127.0.0.11", map[string]string{"app": "chat"}, true)
	a.readyPod(t, ctx, "chat-1", "127.0.0.12", map[string]string{"app": "chat", modelmetrics.EngineLabel: "sglang"}, true)
	a.readyPod(t, ctx, "chat-2", "127.0.0.13", map[string]string{"app": "chat"}, false)
	a.readyPod(t, ctx, "other-0", "127.0.0.14", map[string]string{"app": "other"}, true)
	a.apply(t, ctx, fmt.Sprintf(`apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: premium, namespace: %[1]s}
spec: {priority: 50, poolRef: {name: chat}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: orphan, namespace: %[1]s}
spec: {priority: 10, poolRef: {name: no-such-pool}}
`, ns))

	a.startSpoke(t, hub, spokekube.Options{GatewayService: types.NamespacedName{Namespace: ns, Name: "inference-gateway"}})
	b.startSpoke(t, hub, spokekube.Options{CreateNamespaces: true})
	c.startSpoke(t, hub, spokekube.Options{})

	t.Run("pods become endpoints with their engine", func(t *testing.T) {
		testkit.Eventually(t, 30*time.Second, "a's pool endpoints", func() error {
			pools := a.ctrl.Pools()
			if len(pools) != 1 || pools[0].Ref != (fleet.PoolRef{Namespace: ns, Name: "chat"}) || pools[0].Export {
				return fmt.Errorf("pools %+v", pools)
			}
			want := []source.Endpoint{{Address: "127.0.0.11:8000", Engine: modelmetrics.EngineVLLM}, {Address: "127.0.0.12:8000", Engine: modelmetrics.EngineSGLang}}
			if !slices.EqualFunc(pools[0].Endpoints, want, func(x, y source.Endpoint) bool { return x.Address == y.Address && x.Engine == y.Engine }) {
				return fmt.Errorf("endpoints %+v, want %+v (the unready Pod and the other pool's Pod excluded)", pools[0].Endpoints, want)
			}
			return nil
		})
		chat := fleet.PoolRef{Namespace: ns, Name: "chat"}
		if p, ok := a.ctrl.Priority(chat, "premium"); !ok || p != 50 {
			t.Fatalf("objective premium: %d, %v; want 50 from the cluster", p, ok)
		}
		testkit.Eventually(t, 20*time.Second, "objective on a missing pool", wantEvent(ctx, a, spokekube.ReasonObjectivePoolMissing, "orphan"))
	})

	t.Run("export reaches every cluster", func(t *testing.T) {
		a.apply(t, ctx, poolManifest("chat", "ClusterSet"))
		testkit.Eventually(t, 30*time.Second, "import in a and b", func() error {
			if err := wantImport(ctx, a, "chat", "a")(); err != nil {
				return err
			}
			return wantImport(ctx, b, "chat", "a")()
		})
		// c may not create the namespace: a's pool says who is missing and why.
		testkit.Eventually(t, 20*time.Second, "a's pool pending on c", wantExported(ctx, a, "chat", metav1.ConditionFalse, spokekube.ReasonPending, "c: NamespaceNotFound"))
		if _, err := c.api.Kubectl(ctx, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 30*time.Second, "import in c once its namespace exists", wantImport(ctx, c, "chat", "a"))
		testkit.Eventually(t, 20*time.Second, "a's pool exported", wantExported(ctx, a, "chat", metav1.ConditionTrue, "Exported", "all 3 live member clusters"))
		_, parents, err := a.exported(ctx, "chat")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(parents, func(p giev1.ParentStatus) bool { return p.ControllerName == "example.com/gateway-controller" }) {
			t.Fatalf("the gateway controller's parent status was clobbered: %+v", parents)
		}
		if ns, err := b.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil || ns.Labels[spokekube.ManagedByLabel] != spokekube.ManagedByValue {
			t.Fatalf("b's spoke should have created the namespace: %v %v", ns, err)
		}
	})

	t.Run("a second exporter is listed", func(t *testing.T) {
		b.apply(t, ctx, poolManifest("chat", "ClusterSet"))
		for _, cl := range []*k8sCluster{a, b, c} {
			testkit.Eventually(t, 30*time.Second, "import lists a and b in "+cl.id, wantImport(ctx, cl, "chat", "a", "b"))
		}
		testkit.Eventually(t, 20*time.Second, "b's pool exported", wantExported(ctx, b, "chat", metav1.ConditionTrue, "Exported", "all 3"))
	})

	t.Run("bad objects are reported, not fatal", func(t *testing.T) {
		c.apply(t, ctx, poolManifest("odd", "Everywhere"))
		testkit.Eventually(t, 20*time.Second, "unsupported export value", wantExported(ctx, c, "odd", metav1.ConditionFalse, "NotSupported", "Everywhere"))
		testkit.Eventually(t, 20*time.Second, "event on the pool", wantEvent(ctx, c, spokekube.ReasonUnsupportedExport, "odd"))
		noSelector := strings.Replace(poolManifest("empty", ""), "    matchLabels: {app: empty}\n", "    matchLabels: {}\n", 1)
		out, err := c.api.KubectlStdin(ctx, noSelector, "apply", "-f", "-")
		if err == nil || !strings.Contains(string(out), "spec.selector.matchLabels") {
			t.Fatalf("a pool without selector must be refused by the API server naming the field: %v\n%s", err, out)
		}
		if imp, _ := a.exportingClusters(ctx, "odd"); imp != nil {
			t.Fatalf("a pool with an unsupported export value was imported: %v", imp)
		}
	})

	t.Run("withdrawal", func(t *testing.T) {
		a.apply(t, ctx, poolManifest("chat", "")) // annotation removed
		for _, cl := range []*k8sCluster{a, b, c} {
			testkit.Eventually(t, 30*time.Second, "a withdrawn in "+cl.id, wantImport(ctx, cl, "chat", "b"))
		}
		testkit.Eventually(t, 20*time.Second, "a's Exported condition removed", func() error {
			cond, parents, err := a.exported(ctx, "chat")
			if err != nil {
				return err
			}
			if cond != nil || len(parents) != 1 {
				return fmt.Errorf("parents %+v: want the gateway controller's alone", parents)
			}
			return nil
		})
		if err := b.gie.InferenceV1().InferencePools(ns).Delete(ctx, "chat", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, cl := range []*k8sCluster{a, b, c} {
			testkit.Eventually(t, 30*time.Second, "import deleted in "+cl.id, wantImport(ctx, cl, "chat"))
		}
	})

	t.Run("a spoke that loses its API server keeps its state and reconciles on return", func(t *testing.T) {
		before := c.ctrl.Pools()
		c.api.StopAPIServer()
		a.apply(t, ctx, poolManifest("chat", "ClusterSet"))
		testkit.Eventually(t, 30*time.Second, "import in b", wantImport(ctx, b, "chat", "a"))
		testkit.Eventually(t, 10*time.Second, "a's export in c's view of the fleet", testkit.True(func() bool {
			for _, imp := range c.hub.View().Imports() {
				if imp.Pool == (fleet.PoolRef{Namespace: ns, Name: "chat"}) && slices.Contains(imp.ExportingClusters, "a") {
					return true
				}
			}
			return false
		}))
		// c's controller now has an import to write and no API server to write it to, and its
		// watches fail. That its pools stay through a while of this is the assertion, so here a
		// bounded wait is the test: nothing is to happen.
		time.Sleep(time.Second)
		if after := c.ctrl.Pools(); !slices.EqualFunc(before, after, func(x, y source.Pool) bool { return x.Ref == y.Ref }) || len(after) == 0 {
			t.Fatalf("c's pools while its API server is down: %+v, want %+v", after, before)
		}
		if err := c.api.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 60*time.Second, "import in c after its API server returned", wantImport(ctx, c, "chat", "a"))
		testkit.Eventually(t, 30*time.Second, "a's pool exported again", wantExported(ctx, a, "chat", metav1.ConditionTrue, "Exported", "all 3"))
	})

	t.Run("remote gateways: MCS-API first, the registered address otherwise", func(t *testing.T) {
		testkit.Eventually(t, 20*time.Second, "ServiceExport of a's gateway", func() error {
			se, err := a.mcs.MulticlusterV1beta1().ServiceExports(ns).Get(ctx, "inference-gateway", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if se.Labels[spokekube.ManagedByLabel] != spokekube.ManagedByValue {
				return fmt.Errorf("labels %v", se.Labels)
			}
			return nil
		})
		testkit.Eventually(t, 20*time.Second, "b's registered gateway", func() error {
			addr, from, ok := a.ctrl.RemoteGateway("b")
			if !ok || from != spokekube.GatewayFromHub || addr != "gateway.b.test:8080" {
				return fmt.Errorf("got %q from %q (%v), want b's registered address from the hub", addr, from, ok)
			}
			return nil
		})
		// An MCS implementation imports b's gateway: an EndpointSlice labelled with its source cluster.
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "imported-inference-gateway-b", Namespace: ns, Labels: map[string]string{
				mcsv1beta1.LabelServiceName: "inference-gateway", mcsv1beta1.LabelSourceCluster: "b",
				discoveryv1.LabelServiceName: "derived-inference-gateway",
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
				{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		}
		if _, err := a.kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, "b's gateway through MCS", func() error {
			addr, from, ok := a.ctrl.RemoteGateway("b")
			if !ok || from != spokekube.GatewayFromMCS || addr != "10.1.0.2:8080" {
				return fmt.Errorf("got %q from %q (%v), want the ready imported endpoint", addr, from, ok)
			}
			return nil
		})
		if addr, from, _ := a.ctrl.RemoteGateway("c"); from != spokekube.GatewayFromHub {
			t.Fatalf("c has no imported slice: got %q from %q", addr, from)
		}
	})
}

// TestDemoKubernetes runs `make demo-k8s`'s fleet: a real API server per region, spokes on the
// Kubernetes source, load through each region's gateway into the simulators behind the Pods.
func TestDemoKubernetes(t *testing.T) {
	bin := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "fleet"), "--bin-dir", bin, "--work-dir", t.TempDir(),
		"--kubernetes", "--repo-root", "..", "--duration", "5s")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo-k8s: %v\n%s", err, out)
	}
	text := string(out)
	for _, re := range []string{
		`(?m)^default\s+chat\s+spillway\.io/spoke\s+eu-west-1,us-east-1,us-west-1$`,
		`spillway\.io/spoke\s+InferencePoolImport/chat\s+Exported=True \(Exported: imported by all 3 live member clusters\)`,
		`(?m)^default/chat\s+us-east-1\s+us-east\s+Alive\s+3/3`,
		`load through the us-west gateway:\n.*\n\s+BestEffort\s+(\d+)\s+(\d+)\s+200×`,
		`fleet stopped`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo-k8s output does not match %s:\n%s", re, text)
		}
	}
	for _, summary := range regexp.MustCompile(`(?m)^\s+(Critical|Standard|BestEffort)\s+(\d+)\s+(\d+)\s`).FindAllStringSubmatch(text, -1) {
		if summary[2] != summary[3] || summary[2] == "0" {
			t.Errorf("%s: %s requests, %s succeeded: every request should be served at this load", summary[1], summary[2], summary[3])
		}
	}
}

// TestSpillPolicyDrivesTheDecision: the SpillPolicy naming the EPP's pool sets the spill
// decision's policy; its status says Accepted, and whether the pool is spilling and since when;
// a second policy for the same pool is Conflicted; deleting the policy restores the default.
func TestSpillPolicyDrivesTheDecision(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	apis := startAPIServers(t, ctx, "p")
	hub := hubtest.Start(t, 3*time.Second)
	c := newK8sCluster(t, "p", apis["p"])
	if _, err := c.api.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	c.apply(t, ctx, poolManifest("chat", ""))
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return nil })
	if err != nil {
		t.Fatal(err)
	}
	c.startSpoke(t, hub, spokekube.Options{Spillers: func() map[fleet.PoolRef]spokekube.Spiller {
		return map[fleet.PoolRef]spokekube.Spiller{{Namespace: ns, Name: "chat"}: dec}
	}, DefaultSpillPolicy: spill.DefaultPolicy()})

	policy := func(name string) string {
		return fmt.Sprintf("apiVersion: spillway.io/v1alpha1\nkind: SpillPolicy\nmetadata: {name: %s, namespace: %s}\nspec: {poolRef: {name: chat}, tripMark: 0.8, clearMark: 0.5, targetRegions: [eu-west]}\n", name, ns)
	}
	c.apply(t, ctx, policy("chat"))
	testkit.Eventually(t, 20*time.Second, "the policy applies", func() error {
		if p := dec.Policy(); p.TripMark != 0.8 || p.ClearMark != 0.5 || len(p.TargetRegions) != 1 {
			return fmt.Errorf("decision policy %+v", p)
		}
		return nil
	})
	status := func(name string) (map[string]any, error) {
		out, err := c.api.Kubectl(ctx, "get", "spillpolicy", name, "-n", ns, "-o", "json")
		if err != nil {
			return nil, err
		}
		var obj struct {
			Status map[string]any `json:"status"`
		}
		return obj.Status, json.Unmarshal(out, &obj)
	}
	condition := func(st map[string]any) (string, string) {
		conds, _ := st["conditions"].([]any)
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Accepted" {
				return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"])
			}
		}
		return "", ""
	}
	testkit.Eventually(t, 20*time.Second, "Accepted and not spilling", func() error {
		st, err := status("chat")
		if err != nil {
			return err
		}
		if s, r := condition(st); s != "True" || r != "Accepted" || st["spilling"] != false {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 20, Saturation: 1, Saturated: true})
	testkit.Eventually(t, 10*time.Second, "status says spilling", func() error {
		st, err := status("chat")
		if err != nil {
			return err
		}
		if st["spilling"] != true || st["since"] == nil {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	// Creation timestamps have a one-second grain: wait (this is no assertion) for the second after
	// the first policy's creation, so the second policy is strictly younger.
	out, err := c.api.Kubectl(ctx, "get", "spillpolicy", "chat", "-n", ns, "-o", "jsonpath={.metadata.creationTimestamp}")
	if err != nil {
		t.Fatal(err)
	}
	created, err := time.Parse(time.RFC3339, strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("creation timestamp %q: %v", out, err)
	}
	time.Sleep(time.Until(created.Add(time.Second)))
	c.apply(t, ctx, policy("chat-too"))
	testkit.Eventually(t, 20*time.Second, "the younger policy is Conflicted", func() error {
		st, err := status("chat-too")
		if err != nil {
			return err
		}
		if s, r := condition(st); s != "False" || r != spokekube.ReasonPolicyConflicted {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	if _, err := c.api.Kubectl(ctx, "delete", "spillpolicy", "chat", "chat-too", "-n", ns); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the default policy is back", func() error {
		if p := dec.Policy(); p.TripMark != spill.DefaultPolicy().TripMark || len(p.TargetRegions) != 0 {
			return fmt.Errorf("decision policy %+v", p)
		}
		return nil
	})
}
