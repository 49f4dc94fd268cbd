package kube_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gieclient "sigs.k8s.io/gateway-api-inference-extension/client-go/clientset/versioned"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/source"
)

func poolManifest(namespace, name string, exported bool) string {
	ann := ""
	if exported {
		ann = "\n  annotations:\n    inference.networking.x-k8s.io/export: ClusterSet"
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
`, name, namespace, ann, name)
}

// exportedCondition checks Spillway's Exported condition on a pool: nil want means none.
func exportedCondition(ctx context.Context, gie gieclient.Interface, p fleet.PoolRef, want *metav1.Condition) func() error {
	return func() error {
		pool, err := gie.InferenceV1().InferencePools(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var got *metav1.Condition
		for _, ps := range pool.Status.Parents {
			if ps.ControllerName == kube.DefaultControllerName {
				got = meta.FindStatusCondition(ps.Conditions, "Exported")
			}
		}
		switch {
		case want == nil && got == nil:
			return nil
		case want == nil:
			return fmt.Errorf("%s: Exported=%s/%s %q, want no condition", p, got.Status, got.Reason, got.Message)
		case got == nil:
			return fmt.Errorf("%s: no Exported condition, want %s/%s", p, want.Status, want.Reason)
		case got.Status != want.Status || got.Reason != want.Reason || !strings.Contains(got.Message, want.Message):
			return fmt.Errorf("%s: Exported=%s/%s %q, want %s/%s containing %q", p, got.Status, got.Reason, got.Message, want.Status, want.Reason, want.Message)
		}
		return nil
	}
}

// TestPoolsTheHubRefusesAreMarkedNotAllowed runs a real API server, a hub that denies the
// cluster's own namespaces and accepts two exports per cluster, and a spoke's controller and hub
// client. Of four annotated pools, the one in kube-system and the one beyond the cap carry
// Exported=False NotAllowedByHub with the hub's rule; the other two are exported to the end
// (Exported=True), the hub refuses nothing, and when a pool leaves the exports the one beyond the
// cap takes its place.
func TestPoolsTheHubRefusesAreMarkedNotAllowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := apiserver.StartOne(ctx, t, "../..", "a")
	gie := gieclient.NewForConfigOrDie(api.RESTConfig())
	hub := hubtest.StartWith(t, 3*time.Second, hubtest.Options{Limits: server.Limits{
		DeniedExportNamespaces: server.DefaultDeniedExportNamespaces(),
		MaxExportsPerCluster:   2,
	}})

	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	code := fleet.PoolRef{Namespace: "default", Name: "code"}
	zed := fleet.PoolRef{Namespace: "default", Name: "zed"}
	sys := fleet.PoolRef{Namespace: "kube-system", Name: "sys"}
	var manifests []string
	for _, p := range []fleet.PoolRef{chat, code, zed, sys} {
		manifests = append(manifests, poolManifest(p.Namespace, p.Name, true))
	}
	if _, err := api.KubectlStdin(ctx, strings.Join(manifests, "---\n"), "apply", "--server-side", "--field-manager=test", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// The spoke as spoke/app wires it: the hub client, the controller, local pools → exports. No
	// periodic resync: the controller follows object, view and refusal changes.
	client := hubclient.New(hubclient.Options{
		Cluster:    fleet.ClusterInfo{ID: "a", Region: "r"},
		HubAddress: hub.Addr, TLS: hub.ClientTLS(hubtest.Cluster("a")), MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	})
	ctrl, err := kube.New(kube.Options{Config: api.RESTConfig(), ClusterID: "a", View: client.View(), Reporter: client, Refused: client, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = client.Run(runCtx) }()
	go func() {
		defer wg.Done()
		if err := ctrl.Run(runCtx); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			ch := ctrl.Changed()
			client.SetExports(source.Exports(ctrl.Pools()))
			select {
			case <-runCtx.Done():
				return
			case <-ch:
			}
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })

	exported := &metav1.Condition{Status: metav1.ConditionTrue, Reason: "Exported", Message: "imported by all 1 live member clusters"}
	for _, tc := range []struct {
		pool fleet.PoolRef
		want *metav1.Condition
	}{
		{chat, exported},
		{code, exported},
		{sys, &metav1.Condition{Status: metav1.ConditionFalse, Reason: kube.ReasonNotAllowedByHub,
			Message: "namespace kube-system is denied for exports by the hub (--denied-export-namespaces)"}},
		{zed, &metav1.Condition{Status: metav1.ConditionFalse, Reason: kube.ReasonNotAllowedByHub,
			Message: "the hub accepts at most 2 exports per cluster (--max-exports-per-cluster)"}},
	} {
		testkit.Eventually(t, 60*time.Second, tc.pool.String()+"'s Exported condition", exportedCondition(ctx, gie, tc.pool, tc.want))
	}

	// chat leaves the exports: its condition goes, and zed, now within the cap, is exported.
	if _, err := api.KubectlStdin(ctx, poolManifest(chat.Namespace, chat.Name, false), "apply", "--server-side", "--field-manager=test", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "zed exported in chat's place", exportedCondition(ctx, gie, zed, exported))
	testkit.Eventually(t, 30*time.Second, "chat's condition removed", exportedCondition(ctx, gie, chat, nil))
	if err := exportedCondition(ctx, gie, sys, &metav1.Condition{Status: metav1.ConditionFalse, Reason: kube.ReasonNotAllowedByHub, Message: "kube-system"})(); err != nil {
		t.Error(err)
	}
	if n := promtest.Value(t, hub.Registry, "spillway_hub_auth_denied_total", "namespace"); n != 0 {
		t.Errorf("the hub refused %v exports for their namespace", n)
	}
	if n := promtest.Value(t, hub.Registry, "spillway_hub_limit_exceeded_total", "exports_per_cluster"); n != 0 {
		t.Errorf("the hub refused %v deltas for the export cap", n)
	}
}
