package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp"
)

// goldens are the kustomizations whose rendering is kept in testdata/<name>.golden.yaml, so that
// a review sees every change to what an operator installs.
var goldens = []struct{ name, dir string }{
	{"hub", "hub"},
	{"hub-components", "testdata/hub-components"},
	{"spoke", "spoke"},
	{"spoke-components", "testdata/spoke-components"},
	{"spoke-create-namespaces", "testdata/spoke-create-namespaces"},
}

const (
	namespace = "spillway-system"
	spokeSA   = "system:serviceaccount:spillway-system:spillway-spoke"
	hubSA     = "system:serviceaccount:spillway-system:spillway-hub"
)

// object is one rendered manifest and its YAML.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	yaml string
}

// kustomize renders dir as `kubectl apply -k` would.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command("kubectl", "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return out
}

func objects(t *testing.T, rendered []byte) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(string(rendered), "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered document: %v\n%s", err, doc)
		}
		if o.Kind == "" {
			t.Fatalf("rendered document without a kind:\n%s", doc)
		}
		o.yaml = strings.TrimSuffix(doc, "\n") + "\n"
		objs = append(objs, o)
	}
	return objs
}

// find returns the object of kind whose name is name, or, for a generated ConfigMap, name plus
// kustomize's content hash.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && (o.Metadata.Name == name || kind == "ConfigMap" && strings.HasPrefix(o.Metadata.Name, name+"-")) {
			return o
		}
	}
	t.Fatalf("no %s %s in the rendered manifests", kind, name)
	return object{}
}

func decode[T any](t *testing.T, o object) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict([]byte(o.yaml), v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
	return v
}

// TestRenderedManifestsMatchGolden: what `kubectl apply -k` installs changes only with a reviewed
// golden file (go test ./deploy -update rewrites them).
func TestRenderedManifestsMatchGolden(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got := kustomize(t, g.dir)
			file := filepath.Join("testdata", g.name+".golden.yaml")
			if want, err := os.ReadFile(file); err == nil && !testkit.Updating() {
				logFirstDifference(t, got, want)
			}
			testkit.Golden(t, file, got)
		})
	}
}

// logFirstDifference logs the first line where got and want differ: a rendered manifest is long.
func logFirstDifference(t *testing.T, got, want []byte) {
	t.Helper()
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	i := 0
	for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
		i++
	}
	if i == len(gl) && i == len(wl) {
		return
	}
	line := func(ls []string) string {
		if i < len(ls) {
			return ls[i]
		}
		return "<end of file>"
	}
	t.Logf("first difference at line %d:\n got: %s\nwant: %s", i+1, line(gl), line(wl))
}

// TestSpokeEPPConfig: the shipped epp.yaml is what the spoke parses at start (a bad key would
// crash-loop every spoke), it says what the defaults are, and the Deployment mounts it where
// --epp-config points.
func TestSpokeEPPConfig(t *testing.T) {
	objs := objects(t, kustomize(t, "spoke"))
	cm := decode[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "spillway-spoke-config"))
	data, ok := cm.Data["epp.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no epp.yaml", cm.Name)
	}
	got, err := epp.ParseConfig([]byte(data))
	if err != nil {
		t.Fatalf("epp.yaml does not parse: %v", err)
	}
	// The file's comment says absent keys take the values it shows: they must be the defaults.
	def := epp.DefaultSettings()
	if !maps.Equal(got.Weights, def.Weights) || got.Fallbacks != def.Fallbacks || got.RetryAfter != def.RetryAfter ||
		got.DefaultPriority != def.DefaultPriority || got.ThresholdsSet {
		t.Errorf("epp.yaml = %+v, want the defaults %+v", got, def)
	}

	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
	c := d.Spec.Template.Spec.Containers[0]
	eppConfig := flagValue(t, c.Args, "--epp-config")
	var mounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name && path.Join(m.MountPath, "epp.yaml") == eppConfig {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--epp-config=%s is not ConfigMap %s's epp.yaml as the Deployment mounts it", eppConfig, cm.Name)
	}
}

// flagValue returns the value of --name=value in args.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("no %s in %q", name, args)
	return ""
}

// TestDeployments: the flags each binary gets, the probes on its HTTP port, and the hardening every
// Pod needs to run under the restricted Pod Security Standard.
func TestDeployments(t *testing.T) {
	for _, tc := range []struct {
		dir, name, image string
		args             []string
		httpPort         int32
	}{
		{
			dir: "hub", name: "spillway-hub", image: "ghcr.io/spillway-io/hub:v0.1.0",
			args: []string{"--grpc-address=:8470", "--admin-address=:8472", "--http-address=:8471", "--data-dir=/var/lib/spillway/etcd",
				"--pki-dir=/var/lib/spillway/pki",
				"--tls-san=spillway-hub.$(POD_NAMESPACE).svc,spillway-hub.$(POD_NAMESPACE).svc.cluster.local,spillway-hub-admin.$(POD_NAMESPACE).svc",
				"--log-format=json"},
			httpPort: 8471,
		},
		{
			dir: "spoke", name: "spillway-spoke", image: "ghcr.io/spillway-io/spoke:v0.1.0",
			args: []string{"--region=$(SPILLWAY_REGION)", "--hub-address=$(SPILLWAY_HUB_ADDRESS)", "--cluster-set=$(SPILLWAY_CLUSTER_SET)",
				"--epp-pool=$(SPILLWAY_EPP_POOL)", "--epp-service=$(SPILLWAY_EPP_SERVICE)", "--gateway-address=$(SPILLWAY_GATEWAY_ADDRESS)", "--gateway-service=$(SPILLWAY_GATEWAY_SERVICE)",
				"--http-address=:8481", "--epp-address=:9002", "--epp-config=/etc/spillway/config/epp.yaml",
				"--credentials-dir=/etc/spillway/credentials", "--log-format=json", "--controller-name=spillway.io/spoke"},
			httpPort: 8481,
		},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := objects(t, kustomize(t, tc.dir))
			d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", tc.name))
			pod := d.Spec.Template.Spec
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Containers))
			}
			c := pod.Containers[0]
			if c.Image != tc.image {
				t.Errorf("image %s, want %s", c.Image, tc.image)
			}
			if !slices.Equal(c.Args, tc.args) {
				t.Errorf("args\n got %q\nwant %q", c.Args, tc.args)
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s probe %+v, want GET %s", p.name, p.probe, p.path)
					continue
				}
				if port := containerPort(c, p.probe.HTTPGet.Port.String()); port != tc.httpPort {
					t.Errorf("%s probe on port %d, want the --http-address port %d", p.name, port, tc.httpPort)
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
			}
			psc, sc := pod.SecurityContext, c.SecurityContext
			switch {
			case psc == nil || sc == nil:
				t.Fatal("no security context")
			case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot, psc.RunAsUser == nil || *psc.RunAsUser == 0:
				t.Errorf("Pod security context %+v: want a non-root user", psc)
			case psc.FSGroup == nil:
				t.Error("no fsGroup: mounted volumes would not be writable by the non-root user")
			case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("seccomp profile %+v, want RuntimeDefault", psc.SeccompProfile)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Error("root filesystem is writable")
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Error("privilege escalation is allowed")
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("capabilities %+v, want all dropped", sc.Capabilities)
			}
		})
	}
}

func containerPort(c corev1.Container, nameOrNumber string) int32 {
	for _, p := range c.Ports {
		if p.Name == nameOrNumber || fmt.Sprint(p.ContainerPort) == nameOrNumber {
			return p.ContainerPort
		}
	}
	return 0
}

// TestHubNeedsNoKubernetesAPI: the hub gets no token, no RBAC and no CRDs (unless the
// token-budgets component gives it a Role: TestHubTokenBudgetsComponent).
func TestHubNeedsNoKubernetesAPI(t *testing.T) {
	objs := objects(t, kustomize(t, "hub"))
	for _, o := range objs {
		switch o.Kind {
		case "CustomResourceDefinition", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding":
			t.Errorf("the hub's base has %s %s", o.Kind, o.Metadata.Name)
		}
	}
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-hub"))
	if a := d.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("the hub's Pod mounts a service account token")
	}
	// One writer of the embedded etcd's volume at a time.
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || *d.Spec.Replicas != 1 {
		t.Errorf("strategy %s with %d replicas, want Recreate with 1", d.Spec.Strategy.Type, *d.Spec.Replicas)
	}
}

// TestHubTokenBudgetsComponent: the token-budgets component gives the hub exactly what reading
// TokenBudgets needs: a Role in the hub's namespace to read them and write their status, bound
// to the hub's ServiceAccount, its token mounted, and the flag; nothing cluster-wide.
func TestHubTokenBudgetsComponent(t *testing.T) {
	objs := objects(t, kustomize(t, "testdata/hub-token-budgets"))
	for _, o := range objs {
		if o.Kind == "ClusterRole" || o.Kind == "ClusterRoleBinding" || o.Kind == "CustomResourceDefinition" {
			t.Errorf("the component adds %s %s", o.Kind, o.Metadata.Name)
		}
	}
	role := decode[rbacv1.Role](t, find(t, objs, "Role", "spillway-hub-token-budgets"))
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"spillway.io"}, Resources: []string{"tokenbudgets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"spillway.io"}, Resources: []string{"tokenbudgets/status"}, Verbs: []string{"update", "patch"}},
	}
	if role.Namespace != namespace || !slices.EqualFunc(role.Rules, want, func(a, b rbacv1.PolicyRule) bool {
		return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) && slices.Equal(a.Verbs, b.Verbs) &&
			len(a.ResourceNames) == 0 && len(a.NonResourceURLs) == 0
	}) {
		t.Errorf("Role in %s with rules %+v, want %+v in %s", role.Namespace, role.Rules, want, namespace)
	}
	b := decode[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", "spillway-hub-token-budgets"))
	if b.Namespace != namespace || b.RoleRef.Kind != "Role" || b.RoleRef.Name != role.Name ||
		len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "spillway-hub" || b.Subjects[0].Namespace != namespace {
		t.Errorf("RoleBinding %+v, want the Role bound to ServiceAccount %s/spillway-hub", b, namespace)
	}
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-hub"))
	pod := d.Spec.Template.Spec
	if a := pod.AutomountServiceAccountToken; a == nil || !*a || pod.ServiceAccountName != "spillway-hub" {
		t.Errorf("the hub's Pod mounts no token of ServiceAccount spillway-hub (automount %v, account %s)", a, pod.ServiceAccountName)
	}
	if !slices.Contains(pod.Containers[0].Args, "--budgets-from-cluster") {
		t.Errorf("args %q: no --budgets-from-cluster", pod.Containers[0].Args)
	}
}

// TestSpokeSettings: every setting the spoke's args refer to comes from a key of the settings
// ConfigMap, and the example overlay sets them.
func TestSpokeSettings(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want map[string]string
	}{
		{"spoke", map[string]string{"region": "", "hub-address": "spillway-hub.spillway-system.svc:8470", "cluster-set": "",
			"epp-pool": "", "epp-service": "", "gateway-address": "", "gateway-service": ""}},
		{"examples/spoke", map[string]string{"region": "us-east1", "hub-address": "hub.spillway.example.com:8470", "cluster-set": "prod",
			"epp-pool": "llm/chat", "epp-service": "", "gateway-address": "", "gateway-service": "gateway-system/inference-gateway"}},
		{"examples/spoke-pools", map[string]string{"region": "us-east1", "hub-address": "hub.spillway.example.com:8470", "cluster-set": "prod",
			"epp-pool": "", "epp-service": "spillway-spoke-epp", "gateway-address": "", "gateway-service": "gateway-system/inference-gateway"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := objects(t, kustomize(t, tc.dir))
			cm := decode[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "spillway-spoke-settings"))
			if !maps.Equal(cm.Data, tc.want) {
				t.Errorf("settings %v, want %v", cm.Data, tc.want)
			}
			d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
			c := d.Spec.Template.Spec.Containers[0]
			used := map[string]bool{}
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.ConfigMapKeyRef
				if ref.Name != cm.Name {
					t.Errorf("env %s comes from ConfigMap %s, want %s", e.Name, ref.Name, cm.Name)
				}
				if _, ok := cm.Data[ref.Key]; !ok {
					t.Errorf("env %s comes from key %s, which the settings do not have", e.Name, ref.Key)
				}
				used[e.Name] = true
			}
			for _, a := range c.Args {
				if _, v, ok := strings.Cut(a, "=$("); ok && !used[strings.TrimSuffix(v, ")")] {
					t.Errorf("arg %s refers to an env var that no setting provides", a)
				}
			}
		})
	}
}

// TestSpokeInPoolNamespace: the overlay that runs the spoke beside the pools moves everything
// into their namespace, binds the role to the moved ServiceAccount, and neither creates nor (on
// `kubectl delete -k`) deletes the pools' namespace.
func TestSpokeInPoolNamespace(t *testing.T) {
	for _, o := range objects(t, kustomize(t, "examples/spoke-pool-namespace")) {
		switch {
		case o.Kind == "Namespace":
			t.Errorf("the overlay has Namespace %s", o.Metadata.Name)
		case o.Kind == "ClusterRoleBinding":
			b := decode[rbacv1.ClusterRoleBinding](t, o)
			if len(b.Subjects) != 1 || b.Subjects[0].Namespace != "llm" {
				t.Errorf("ClusterRoleBinding %s subjects %+v, want the ServiceAccount in llm", b.Name, b.Subjects)
			}
		case o.Metadata.Namespace != "" && o.Metadata.Namespace != "llm":
			t.Errorf("%s %s is in namespace %s, want llm", o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
	}
}

// startCluster starts a real kube-apiserver and its etcd, stopped when the test ends. Without the
// binaries the test is skipped, unless SPILLWAY_REQUIRE_K8S is set or SPILLWAY_K8S_BIN_DIR names
// where they should be (make test sets it): there a missing binary is a failure, not a skip.
func startCluster(t *testing.T, ctx context.Context) *apiserver.Cluster {
	t.Helper()
	bins, err := apiserver.FindBins("..")
	if err != nil {
		if os.Getenv("SPILLWAY_REQUIRE_K8S") == "" && os.Getenv("SPILLWAY_K8S_BIN_DIR") == "" {
			t.Skipf("no kube-apiserver to test against (make k8s-bins builds it): %v", err)
		}
		t.Fatal(err)
	}
	// kubectl caches discovery per API server address; every test server has a new one.
	t.Setenv("KUBECACHEDIR", t.TempDir())
	c, err := apiserver.Start(ctx, bins, t.TempDir(), "deploy", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// join makes one multi-document YAML of objs.
func join(objs []object) string {
	docs := make([]string, len(objs))
	for i, o := range objs {
		docs[i] = o.yaml
	}
	return strings.Join(docs, "---\n")
}

func apply(ctx context.Context, c *apiserver.Cluster, manifests string) ([]byte, error) {
	return c.KubectlStdin(ctx, manifests, "apply", "--server-side", "--field-manager=spillway-test", "-f", "-")
}

// access is a request for the authorizer: a verb on a resource (or its subresource) of a group.
type access struct {
	verb, group, resource, subresource string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	return a.verb + " " + r
}

// spokeMay asks the API server's authorizer, with one SubjectAccessReview per access, whether the
// spoke's ServiceAccount may do each thing in namespace llm. `kubectl auth can-i` would resolve
// each resource through discovery first, and asks about the wrong resource when its CRD is not
// installed (llm-d.ai's InferenceObjective is not, here); a review names the group exactly.
func spokeMay(t *testing.T, ctx context.Context, c *apiserver.Cluster, checks ...access) []bool {
	t.Helper()
	return spokeMayIn(t, ctx, c, "llm", checks...)
}

// spokeMayIn is spokeMay in namespace ns.
func spokeMayIn(t *testing.T, ctx context.Context, c *apiserver.Cluster, ns string, checks ...access) []bool {
	t.Helper()
	return mayIn(t, ctx, c, spokeSA, ns, checks...)
}

// mayIn asks the API server's authorizer whether the ServiceAccount user (of namespace) may do
// each thing in namespace ns, as spokeMay does.
func mayIn(t *testing.T, ctx context.Context, c *apiserver.Cluster, user, ns string, checks ...access) []bool {
	t.Helper()
	type attributes struct {
		Namespace   string `json:"namespace"`
		Verb        string `json:"verb"`
		Group       string `json:"group"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	}
	type review struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			User               string     `json:"user"`
			Groups             []string   `json:"groups"`
			ResourceAttributes attributes `json:"resourceAttributes"`
		} `json:"spec"`
		Status struct {
			Allowed bool `json:"allowed"`
		} `json:"status"`
	}
	var reviews []review
	for _, a := range checks {
		r := review{APIVersion: "authorization.k8s.io/v1", Kind: "SubjectAccessReview"}
		// The user and groups the API server authenticates the ServiceAccount's token as.
		r.Spec.User = user
		r.Spec.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
		r.Spec.ResourceAttributes = attributes{Namespace: ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource}
		reviews = append(reviews, r)
	}
	list, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": reviews})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.KubectlStdin(ctx, string(list), "create", "-f", "-", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	allowed := make([]bool, len(checks))
	for i := range checks {
		var r review
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("answer %d of %d: %v\n%s", i+1, len(checks), err, out)
		}
		if r.Spec.ResourceAttributes != reviews[i].Spec.ResourceAttributes {
			t.Fatalf("answer %d is about %+v, asked %+v", i+1, r.Spec.ResourceAttributes, reviews[i].Spec.ResourceAttributes)
		}
		allowed[i] = r.Status.Allowed
	}
	return allowed
}

// TestOnAPIServer installs the CRDs, the hub and the spoke on a real kube-apiserver as
// docs/install.md does, then checks the spoke's permissions and SpillPolicy validation there.
func TestOnAPIServer(t *testing.T) {
	bins := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startCluster(t, ctx)

	hub := objects(t, kustomize(t, "hub"))
	spoke := objects(t, kustomize(t, "spoke"))
	withNamespaces := objects(t, kustomize(t, "testdata/spoke-create-namespaces"))

	// The Prometheus Operator brings the ServiceMonitor kind to a real cluster (hack/crds.sh
	// copies its CRD for this test), and cert-manager the Certificate and Issuer kinds of the
	// examples (testdata/cert-manager); they must exist before the manifests are applied.
	for _, crd := range []string{
		"../e2e/apiserver/testdata/monitoring.coreos.com_servicemonitors.yaml",
		"testdata/cert-manager/cert-manager.io_certificates.yaml",
		"testdata/cert-manager/cert-manager.io_issuers.yaml",
	} {
		b, err := os.ReadFile(crd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := apply(ctx, c, string(b)); err != nil {
			t.Fatalf("%s: %v", crd, err)
		}
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com",
		"crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io"); err != nil {
		t.Fatal(err)
	}

	// Each base in one apply, CRDs included, as an operator runs `kubectl apply --server-side -k`.
	t.Run("every object is accepted", func(t *testing.T) {
		for _, set := range []struct {
			name string
			objs []object
		}{{"hub", hub}, {"spoke", spoke}} {
			out, err := apply(ctx, c, join(set.objs))
			if err != nil {
				t.Fatalf("%s: %v", set.name, err)
			}
			// One line per object: "<kind>/<name> serverside-applied".
			if n := strings.Count(string(out), " serverside-applied"); n != len(set.objs) {
				t.Errorf("%s: %d of %d objects applied:\n%s", set.name, n, len(set.objs), out)
			}
		}
		var crds []string
		for _, o := range spoke {
			if o.Kind == "CustomResourceDefinition" {
				crds = append(crds, "crd/"+o.Metadata.Name)
			}
		}
		if len(crds) != 6 {
			t.Fatalf("the spoke's CRDs are %v, want the 6 of deploy/crds", crds)
		}
		if _, err := c.Kubectl(ctx, append([]string{"wait", "--for=condition=established", "--timeout=60s"}, crds...)...); err != nil {
			t.Fatal(err)
		}
	})

	// The example's pools, as GIE's CRD validates them: each names the EPP Service and a port.
	t.Run("the spoke-pools example's pools are valid", func(t *testing.T) {
		var pools []object
		for _, o := range objects(t, kustomize(t, "examples/spoke-pools")) {
			if o.Kind == "InferencePool" {
				pools = append(pools, o)
			}
		}
		if len(pools) != 3 {
			t.Fatalf("%d pools in examples/spoke-pools, want 3", len(pools))
		}
		// In a namespace of their own here (the example's llm has SpillPolicies in this test).
		if _, err := c.Kubectl(ctx, "create", "namespace", "llm-pools"); err != nil {
			t.Fatal(err)
		}
		out, err := apply(ctx, c, strings.ReplaceAll(join(pools), "namespace: llm\n", "namespace: llm-pools\n"))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(out), " serverside-applied"); n != 3 {
			t.Errorf("%d of 3 pools applied:\n%s", n, out)
		}
	})

	// The spoke's permissions, as the API server decides them for its ServiceAccount.
	t.Run("spoke RBAC", func(t *testing.T) {
		const (
			gie   = "inference.networking.k8s.io"
			giex  = "inference.networking.x-k8s.io"
			mcs   = "multicluster.x-k8s.io"
			spill = "spillway.io"
		)
		checks := []struct {
			access
			want bool
		}{
			{access{"list", gie, "inferencepools", ""}, true},
			{access{"watch", gie, "inferencepools", ""}, true},
			{access{"patch", gie, "inferencepools", "status"}, true},
			{access{"update", gie, "inferencepools", "status"}, true},
			{access{"update", gie, "inferencepools", ""}, false}, // the pool's spec is its owner's
			{access{"patch", gie, "inferencepools", ""}, false},
			{access{"delete", gie, "inferencepools", ""}, false},
			{access{"create", giex, "inferencepoolimports", ""}, true},
			{access{"delete", giex, "inferencepoolimports", ""}, true},
			{access{"patch", giex, "inferencepoolimports", "status"}, true},
			{access{"list", "", "pods", ""}, true},
			{access{"watch", "", "pods", ""}, true},
			{access{"delete", "", "pods", ""}, false},
			{access{"create", "", "pods", ""}, false},
			{access{"watch", giex, "inferenceobjectives", ""}, true},
			{access{"watch", "llm-d.ai", "inferenceobjectives", ""}, true},
			{access{"update", giex, "inferenceobjectives", ""}, false},
			{access{"watch", "about.k8s.io", "clusterproperties", ""}, true},
			{access{"update", "about.k8s.io", "clusterproperties", ""}, false},
			{access{"watch", spill, "spillpolicies", ""}, true},
			{access{"patch", spill, "spillpolicies", "status"}, true},
			{access{"update", spill, "spillpolicies", ""}, false}, // the policy is the operator's
			{access{"watch", mcs, "serviceimports", ""}, true},
			{access{"create", mcs, "serviceimports", ""}, false},
			{access{"create", mcs, "serviceexports", ""}, true},
			{access{"delete", mcs, "serviceexports", ""}, true},
			{access{"watch", "discovery.k8s.io", "endpointslices", ""}, true},
			{access{"watch", "", "services", ""}, true},
			{access{"create", "", "services", ""}, false},
			{access{"create", "", "events", ""}, true},
			{access{"patch", "events.k8s.io", "events", ""}, true},
			{access{"create", "", "namespaces", ""}, false}, // only with the create-namespaces component
			{access{"get", "", "secrets", ""}, false},
			{access{"list", "", "secrets", ""}, false},
			{access{"list", "", "configmaps", ""}, false},
			{access{"create", "rbac.authorization.k8s.io", "clusterrolebindings", ""}, false},
		}
		var asks []access
		for _, c := range checks {
			asks = append(asks, c.access)
		}
		for i, got := range spokeMay(t, ctx, c, asks...) {
			if got != checks[i].want {
				t.Errorf("spoke may %s: %v, want %v", checks[i].access, got, checks[i].want)
			}
		}
		// The replicas' leader election Lease: in the spoke's own namespace, read, created and
		// renewed, never deleted; no Lease elsewhere.
		const coord = "coordination.k8s.io"
		leases := []struct {
			ns string
			access
			want bool
		}{
			{namespace, access{"get", coord, "leases", ""}, true},
			{namespace, access{"create", coord, "leases", ""}, true},
			{namespace, access{"update", coord, "leases", ""}, true},
			{namespace, access{"delete", coord, "leases", ""}, false},
			{"llm", access{"update", coord, "leases", ""}, false},
			{"kube-system", access{"update", coord, "leases", ""}, false},
		}
		for _, l := range leases {
			if got := spokeMayIn(t, ctx, c, l.ns, l.access)[0]; got != l.want {
				t.Errorf("spoke may %s in %s: %v, want %v", l.access, l.ns, got, l.want)
			}
		}
	})

	// The hub and the spokes run as their Deployments would, with the examples' flags, volumes
	// and Secrets; the spokes with their ServiceAccount's token and against that hub.
	h := startHub(t, bins)
	t.Run("the hub runs with its Deployment's flags and hubctl in its container", func(t *testing.T) { testHubRuns(t, h) })
	run := newSpokeRun(t, ctx, c, bins, h)
	t.Run("the spoke runs with its Deployment's flags, its RBAC and a cert-manager Secret", func(t *testing.T) { testSpokeRuns(t, run) })
	t.Run("the spoke joins with a token", func(t *testing.T) { testSpokeJoins(t, run) })
	t.Run("GIE's chart runs the spoke in place of GIE's EPP", func(t *testing.T) { testGIEChart(t, ctx, run) })

	t.Run("create-namespaces component", func(t *testing.T) {
		if _, err := apply(ctx, c, join(withNamespaces)); err != nil {
			t.Fatal(err)
		}
		got := spokeMay(t, ctx, c, access{"create", "", "namespaces", ""}, access{"delete", "", "namespaces", ""})
		if !got[0] || got[1] {
			t.Errorf("with the component the spoke may create namespaces: %v, delete them: %v; want true, false", got[0], got[1])
		}
	})

	t.Run("SpillPolicy", func(t *testing.T) { testSpillPolicy(t, ctx, c) })

	// docs/install.md removes a spoke without its CRDs this way; the hub beside it stays.
	t.Run("uninstall the spoke alone", func(t *testing.T) {
		for _, args := range [][]string{
			{"-n", namespace, "delete", "deploy/spillway-spoke", "svc/spillway-spoke-epp", "sa/spillway-spoke", "servicemonitor/spillway-spoke",
				"pdb/spillway-spoke", "role/spillway-spoke-leader-election", "rolebinding/spillway-spoke-leader-election"},
			{"-n", namespace, "delete", "configmap", "-l", "app.kubernetes.io/part-of=spillway"},
			{"delete", "clusterrolebinding/spillway-spoke", "clusterrole/spillway-spoke"},
		} {
			if _, err := c.Kubectl(ctx, args...); err != nil {
				t.Fatal(err)
			}
		}
		out, err := c.Kubectl(ctx, "get", "deploy,svc,sa,cm,servicemonitor,pvc,pdb,clusterrole,clusterrolebinding,role,rolebinding", "-A", "-l", "app.kubernetes.io/part-of=spillway", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		want := []string{"deployment.apps/spillway-hub", "persistentvolumeclaim/spillway-hub-etcd", "service/spillway-hub",
			"service/spillway-hub-admin", "serviceaccount/spillway-hub", "servicemonitor.monitoring.coreos.com/spillway-hub"}
		if !slices.Equal(got, want) {
			t.Errorf("left after uninstalling the spoke: %q, want the hub's %q", got, want)
		}
	})

	// After the uninstall, which counts the objects labelled part-of=spillway.
	t.Run("TokenBudget", func(t *testing.T) { testTokenBudget(t, ctx, c) })
	t.Run("the hub reads TokenBudgets with the token-budgets component", func(t *testing.T) { testHubTokenBudgets(t, ctx, c, bins) })

	// Last: the pool-namespace example binds the spoke's role to another ServiceAccount.
	t.Run("examples and components are accepted", func(t *testing.T) {
		for _, dir := range []string{"examples/hub", "examples/hub-cert-manager", "examples/spoke", "examples/spoke-join",
			"examples/spoke-pool-namespace", "testdata/hub-components", "testdata/hub-token-budgets", "testdata/spoke-components"} {
			if _, err := apply(ctx, c, join(objects(t, kustomize(t, dir)))); err != nil {
				t.Errorf("%s: %v", dir, err)
			}
		}
		if _, err := c.Kubectl(ctx, "apply", "--server-side", "--field-manager=spillway-test", "-f", "examples/cluster-properties.yaml"); err != nil {
			t.Error(err)
		}
	})
}

func spillPolicy(name, spec string) string {
	return fmt.Sprintf("apiVersion: spillway.io/v1alpha1\nkind: SpillPolicy\nmetadata: {name: %s, namespace: llm}\n%s\n", name, spec)
}

// spillPolicySpec is the part of a SpillPolicy the API server defaults.
type spillPolicySpec struct {
	PoolRef            struct{ Name string }
	EligiblePriorities struct{ Min *int }
	TripMark           *float64
	ClearMark          *float64
	MinDwell           string
	TargetRegions      []string
	Mode               string
	Failover           struct{ Standard *bool }
}

func testSpillPolicy(t *testing.T, ctx context.Context, c *apiserver.Cluster) {
	if _, err := c.Kubectl(ctx, "create", "namespace", "llm"); err != nil {
		t.Fatal(err)
	}

	// The defaults the CRD documents are filled in by the API server.
	if _, err := apply(ctx, c, spillPolicy("chat", "spec: {poolRef: {name: chat}, targetRegions: [us-west1, eu-west4]}")); err != nil {
		t.Fatal(err)
	}
	out, err := c.Kubectl(ctx, "get", "spillpolicy", "chat", "-n", "llm", "-o", "jsonpath={.spec}")
	if err != nil {
		t.Fatal(err)
	}
	var spec spillPolicySpec
	if err := json.Unmarshal(out, &spec); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	switch {
	case spec.TripMark == nil || *spec.TripMark != 0.9, spec.ClearMark == nil || *spec.ClearMark != 0.7:
		t.Errorf("tripMark, clearMark not defaulted to 0.9, 0.7: %s", out)
	case spec.EligiblePriorities.Min == nil || *spec.EligiblePriorities.Min != 100:
		t.Errorf("eligiblePriorities.min not defaulted to 100 (Critical): %s", out)
	case spec.Mode != "ParentMode", spec.MinDwell != "10s", spec.Failover.Standard == nil || *spec.Failover.Standard:
		t.Errorf("mode, minDwell, failover.standard not defaulted to ParentMode, 10s, false: %s", out)
	case !slices.Equal(spec.TargetRegions, []string{"us-west1", "eu-west4"}):
		t.Errorf("targetRegions lost their order of preference: %s", out)
	}

	// Every field set, at the edges of what is allowed.
	full := `spec:
  poolRef: {name: chat}
  eligiblePriorities: {min: 0}
  tripMark: 1
  clearMark: 0
  minDwell: 1m30.5s
  targetRegions: [us-west1]
  fallback: {pool: chat-small, model: llama-3.1-8b}
  mode: EndpointMode
  failover: {standard: true}`
	if _, err := apply(ctx, c, spillPolicy("chat-full", full)); err != nil {
		t.Errorf("a valid policy was refused: %v", err)
	}

	for _, tc := range []struct {
		name, spec, want string
	}{
		{"clearMark not below tripMark", "spec: {poolRef: {name: chat}, tripMark: 0.6, clearMark: 0.6}", "clearMark must be less than tripMark"},
		{"tripMark below the default clearMark", "spec: {poolRef: {name: chat}, tripMark: 0.5}", "clearMark must be less than tripMark"},
		{"tripMark above 1", "spec: {poolRef: {name: chat}, tripMark: 1.5}", "spec.tripMark: Invalid value: 1.5: spec.tripMark in body should be less than or equal to 1"},
		{"tripMark 0", "spec: {poolRef: {name: chat}, tripMark: 0, clearMark: 0}", "spec.tripMark in body should be greater than 0"},
		{"clearMark 1", "spec: {poolRef: {name: chat}, clearMark: 1}", "spec.clearMark in body should be less than 1"},
		{"unknown mode", "spec: {poolRef: {name: chat}, mode: Teleport}", `spec.mode: Unsupported value: "Teleport"`},
		{"no poolRef", "spec: {tripMark: 0.9}", "spec.poolRef: Required value"},
		{"no spec", "", "spec: Required value"},
		{"pool name not a DNS label", "spec: {poolRef: {name: Chat_Pool}}", "spec.poolRef.name in body should match"},
		{"minDwell without unit", `spec: {poolRef: {name: chat}, minDwell: "10"}`, "spec.minDwell in body should match"},
		{"minDwell in hours", "spec: {poolRef: {name: chat}, minDwell: 1h}", "spec.minDwell in body should match"},
		{"region listed twice", "spec: {poolRef: {name: chat}, targetRegions: [us-east1, us-east1]}", `.spec.targetRegions: duplicate entries for key [="us-east1"]`},
		{"empty fallback", "spec: {poolRef: {name: chat}, fallback: {}}", "fallback needs a pool, a model or both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := apply(ctx, c, spillPolicy("invalid", tc.spec))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.spec)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("refused without saying %q:\n%s", tc.want, out)
			}
		})
	}

	// The spoke reports on the policy through the status subresource, as its ServiceAccount.
	status := `{"status": {"spilling": true, "targetCluster": "gke-us-west1-a", "targetRegion": "us-west1",
  "since": "2026-11-24T10:00:00Z", "observedGeneration": 1,
  "conditions": [{"type": "Accepted", "status": "True", "reason": "PoolFound", "message": "", "lastTransitionTime": "2026-11-24T10:00:00Z"}]}}`
	if _, err := c.Kubectl(ctx, "--as="+spokeSA, "-n", "llm", "patch", "spillpolicy", "chat", "--subresource=status", "--type=merge", "-p", status); err != nil {
		t.Fatal(err)
	}
	out, err = c.Kubectl(ctx, "get", "spill", "chat", "-n", "llm", "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(out)); len(f) < 4 || f[0] != "chat" || f[1] != "chat" || f[2] != "true" || f[3] != "gke-us-west1-a" {
		t.Errorf("kubectl get spill: %q, want columns NAME POOL SPILLING TARGET AGE = chat chat true gke-us-west1-a", out)
	}
	bad := `{"status": {"conditions": [{"type": "Accepted", "status": "Maybe", "reason": "PoolFound", "message": "", "lastTransitionTime": "2026-11-24T10:00:00Z"}]}}`
	if out, err := c.Kubectl(ctx, "--as="+spokeSA, "-n", "llm", "patch", "spillpolicy", "chat", "--subresource=status", "--type=merge", "-p", bad); err == nil ||
		!strings.Contains(string(out), `Unsupported value: "Maybe"`) {
		t.Errorf("a condition with status Maybe: %v\n%s", err, out)
	}
}
