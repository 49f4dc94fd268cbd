package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/budget"
)

// The charts in charts/ install what the kustomize bases install. The tests here render both
// and compare them object by object, field by field, after these mappings, each a convention of
// one tool that the other does differently:
//
//   - kustomize's Namespace object is left out: a chart installs into the release's namespace,
//     which `helm install --create-namespace` makes;
//   - the spoke chart has no CRDs (spillway-crds has them): kustomize's are left out;
//   - kustomize names a generated ConfigMap <generator>-<hash of its content> and rewrites every
//     reference to it, so that a changed setting rolls the Deployment. The chart names it
//     <generator> and rolls the Deployment with the Pod annotation checksum/config. So the
//     hash suffix is stripped from kustomize's generated ConfigMap names and from their
//     references (volumes[].configMap, env[].valueFrom.configMapKeyRef, envFrom[].configMapRef),
//     and the chart's checksum/config annotation is dropped (TestHelmChartConfigChangeRollsTheSpoke
//     checks it instead);
//   - the CRD chart annotates its CRDs with helm.sh/resource-policy: keep (values keep), which
//     is dropped after checking that every CRD has it.
//
// The spoke chart requires region and eppPool, which the spoke refuses to start without: an
// install without them fails at once instead of crash-looping. kustomize's base leaves them empty
// for an overlay to set, so the spoke's charts are compared with an overlay of the same
// kustomization that sets them (settingsOverlay), as an operator's overlay does.

// release is the release every test renders: `helm template spillway <chart> -n spillway-system`.
var release = common.ReleaseOptions{Name: "spillway", Namespace: namespace, IsInstall: true}

// requiredSettings are the spoke chart's required values, and the same as kustomize settings.
var (
	requiredValues   = map[string]any{"region": "us-east1", "eppPool": "llm/chat"}
	requiredSettings = map[string]string{"region": "us-east1", "epp-pool": "llm/chat"}
)

// manifest is one rendered object, by its kind, namespace and name.
type manifest struct {
	key string
	obj map[string]any
}

// parseManifests reads YAML documents, skipping empty ones (a template that rendered nothing).
func parseManifests(t *testing.T, what string, rendered []byte) []manifest {
	t.Helper()
	var out []manifest
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(rendered), -1) {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, doc)
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, manifest{key: keyOf(obj), obj: obj})
	}
	return out
}

func keyOf(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	return fmt.Sprintf("%s %s/%s", obj["kind"], ns, name)
}

// render renders the chart in dir as `helm template spillway dir -n spillway-system` would, with
// values over its values.yaml, and returns its files by name.
func render(t *testing.T, dir string, values map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	vals, err := util.ToRenderValues(ch, values, release, nil)
	if err != nil {
		t.Fatalf("chart %s values: %v", dir, err)
	}
	return engine.Render(ch, vals)
}

// helmRender is the chart's objects, rendered with values.
func helmRender(t *testing.T, dir string, values map[string]any) []manifest {
	t.Helper()
	files, err := render(t, dir, values)
	if err != nil {
		t.Fatalf("render chart %s with %v: %v", dir, values, err)
	}
	var all bytes.Buffer
	for _, n := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(n, ".yaml") {
			all.WriteString("\n---\n" + files[n] + "\n")
		}
	}
	return parseManifests(t, dir, all.Bytes())
}

// settingsOverlay writes a kustomization over dir that sets settings in spillway-spoke-settings
// the way deploy/examples/spoke does (namespace, part-of label, merged literals), and returns
// its directory.
func settingsOverlay(t *testing.T, dir string, settings map[string]string) string {
	t.Helper()
	tmp := t.TempDir()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	// kustomize takes no absolute path to a base.
	rel, err := filepath.Rel(tmp, abs)
	if err != nil {
		t.Fatal(err)
	}
	var lits []string
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		lits = append(lits, fmt.Sprintf("  - %s=%s", k, settings[k]))
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %s
labels:
- pairs:
    app.kubernetes.io/part-of: spillway
resources:
- %s
configMapGenerator:
- name: spillway-spoke-settings
  behavior: merge
  literals:
%s
`, namespace, filepath.ToSlash(rel), strings.Join(lits, "\n"))
	if err := os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// generatedName is a name kustomize gives a generated ConfigMap: the generator's name and a
// hash of the content.
var generatedName = regexp.MustCompile(`^(.+)-[a-z0-9]{10}$`)

// fromKustomize is what `kubectl apply -k dir` installs, mapped to the charts' conventions (see
// the top of this file): without the Namespace and the kinds in drop, and with the generated
// ConfigMaps, and the references to them, by their generator's name.
func fromKustomize(t *testing.T, dir string, drop ...string) []manifest {
	t.Helper()
	all := parseManifests(t, dir, kustomize(t, dir))
	generator := map[string]string{}
	for _, m := range all {
		name := m.obj["metadata"].(map[string]any)["name"].(string)
		if g := generatedName.FindStringSubmatch(name); m.obj["kind"] == "ConfigMap" && g != nil {
			generator[name] = g[1]
		}
	}
	var out []manifest
	for _, m := range all {
		if k := m.obj["kind"].(string); k == "Namespace" || slices.Contains(drop, k) {
			continue
		}
		md := m.obj["metadata"].(map[string]any)
		if g, ok := generator[md["name"].(string)]; ok && m.obj["kind"] == "ConfigMap" {
			md["name"] = g
		}
		unhashReferences(m.obj, generator)
		out = append(out, manifest{key: keyOf(m.obj), obj: m.obj})
	}
	return out
}

// unhashReferences replaces the hashed names in v's references to ConfigMaps with their
// generator's.
func unhashReferences(v any, generator map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if ref, ok := e.(map[string]any); ok && (k == "configMap" || k == "configMapKeyRef" || k == "configMapRef") {
				if name, ok := ref["name"].(string); ok && generator[name] != "" {
					ref["name"] = generator[name]
				}
			}
			unhashReferences(e, generator)
		}
	case []any:
		for _, e := range x {
			unhashReferences(e, generator)
		}
	}
}

// withoutChecksum drops the chart's checksum/config Pod annotation (see the top of this file).
func withoutChecksum(ms []manifest) []manifest {
	for _, m := range ms {
		spec, _ := m.obj["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		if tmpl == nil {
			continue
		}
		md := tmpl["metadata"].(map[string]any)
		if ann, ok := md["annotations"].(map[string]any); ok {
			delete(ann, "checksum/config")
			if len(ann) == 0 {
				delete(md, "annotations")
			}
		}
	}
	return ms
}

// withoutKeep drops the CRD chart's keep policy, failing t where an object lacks it.
func withoutKeep(t *testing.T, ms []manifest) []manifest {
	t.Helper()
	for _, m := range ms {
		md := m.obj["metadata"].(map[string]any)
		ann, _ := md["annotations"].(map[string]any)
		if ann["helm.sh/resource-policy"] != "keep" {
			t.Errorf("%s: no annotation helm.sh/resource-policy: keep, so helm uninstall would delete every object of its kind", m.key)
		}
		delete(ann, "helm.sh/resource-policy")
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	return ms
}

// withTokenBudgetCRD adds to kustomize's CRDs the TokenBudget's, which deploy/crds (the spokes'
// clusters' CRDs) leaves out and the hub's cluster installs from its file.
func withTokenBudgetCRD(t *testing.T, ms []manifest) []manifest {
	t.Helper()
	b, err := os.ReadFile("crds/spillway/spillway.io_tokenbudgets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return append(ms, parseManifests(t, "the TokenBudget CRD", b)...)
}

// without leaves out of ms the objects whose key ends with suffix.
func without(ms []manifest, suffix string) []manifest {
	return slices.DeleteFunc(ms, func(m manifest) bool { return strings.HasSuffix(m.key, suffix) })
}

// sameManifests fails t where the chart's rendering differs from kustomize's: the objects that
// only one has, and the first differing field of each object both have.
func sameManifests(t *testing.T, chart, kust []manifest) {
	t.Helper()
	index := func(ms []manifest) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, m := range ms {
			if _, dup := out[m.key]; dup {
				t.Fatalf("%s rendered twice", m.key)
			}
			out[m.key] = m.obj
		}
		return out
	}
	c, k := index(chart), index(kust)
	ck, kk := slices.Sorted(maps.Keys(c)), slices.Sorted(maps.Keys(k))
	if !slices.Equal(ck, kk) {
		t.Fatalf("the chart renders\n  %s\nkustomize\n  %s", strings.Join(ck, "\n  "), strings.Join(kk, "\n  "))
	}
	for _, key := range ck {
		if path, cv, kv, ok := firstDifference("", c[key], k[key]); !ok {
			t.Errorf("%s differs at %s:\n  chart     %s\n  kustomize %s", key, path, show(cv), show(kv))
		}
	}
}

// show prints a value of a parsed manifest compactly, <absent> for a missing field.
func show(v any) string {
	if v == nil {
		return "<absent>"
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n            ")
}

// firstDifference returns the first path (in sorted key order) where a and b differ, and their
// values there.
func firstDifference(path string, a, b any) (string, any, any, bool) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := slices.Collect(maps.Keys(am))
		for k := range bm {
			if _, ok := am[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, av, bv, ok := firstDifference(path+"."+k, am[k], bm[k]); !ok {
				return p, av, bv, false
			}
		}
		return "", nil, nil, true
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		for i := range min(len(al), len(bl)) {
			if p, av, bv, ok := firstDifference(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i]); !ok {
				return p, av, bv, false
			}
		}
		if len(al) != len(bl) {
			n := min(len(al), len(bl))
			return fmt.Sprintf("%s[%d:]", path, n), al[n:], bl[n:], false
		}
		return "", nil, nil, true
	}
	return path, a, b, reflect.DeepEqual(a, b)
}

// TestHelmChartsMatchKustomize: each chart, with its defaults or with values, installs what the
// kustomize base, one of its overlays, or its components install. A change to one without the
// other fails here, naming the object and field.
func TestHelmChartsMatchKustomize(t *testing.T) {
	with := func(extra map[string]any) map[string]any {
		v := maps.Clone(requiredValues)
		maps.Copy(v, extra)
		return v
	}
	on := map[string]any{"enabled": true}
	for _, tc := range []struct {
		name   string
		chart  string
		values map[string]any
		// kustomize renders dir, with settings merged into spillway-spoke-settings when set,
		// and without the kinds in drop.
		dir      string
		settings map[string]string
		drop     []string
		// chartMap and kustMap map the renderings further.
		chartMap, kustMap func(*testing.T, []manifest) []manifest
	}{
		{name: "hub", chart: "spillway-hub", dir: "hub"},
		{
			name: "hub with every component", chart: "spillway-hub", dir: "testdata/hub-components",
			values: map[string]any{"servingCertificate": on, "signingCA": on, "gossip": on, "tokenBudgets": on},
		},
		{
			name: "hub as the example overlay", chart: "spillway-hub", dir: "examples/hub",
			values: map[string]any{"image": map[string]any{"repository": "registry.example.com/spillway/hub", "tag": "v0.1.0"},
				"extraArgs": []any{"--tls-san=hub.spillway.example.com"}, "spokesService": on},
		},
		{
			name: "spoke with the required values", chart: "spillway-spoke", values: requiredValues,
			dir: "spoke", settings: requiredSettings, drop: []string{"CustomResourceDefinition"},
		},
		{
			name: "spoke as the example overlay", chart: "spillway-spoke", dir: "examples/spoke",
			values: map[string]any{"region": "us-east1", "hubAddress": "hub.spillway.example.com:8470", "clusterSet": "prod",
				"eppPool": "llm/chat", "gatewayService": "gateway-system/inference-gateway",
				"image": map[string]any{"repository": "registry.example.com/spillway/spoke", "tag": "v0.1.0"}},
			// The example's cert-manager Certificate is the operator's, beside the chart.
			drop: []string{"CustomResourceDefinition", "Certificate"},
		},
		{
			name: "spoke with the epp-certificate, gossip and replica-affinity components", chart: "spillway-spoke",
			values: with(map[string]any{"eppCertificate": on, "replicaAffinity": on,
				"gossip": map[string]any{"enabled": true, "join": []any{"10.0.0.7:7946", "10.0.0.8:7946"}}}),
			dir:      "testdata/spoke-components",
			settings: map[string]string{"region": "us-east1", "epp-pool": "llm/chat", "gossip-join": "10.0.0.7:7946,10.0.0.8:7946"},
			drop:     []string{"CustomResourceDefinition"},
		},
		{
			name: "spoke serving every pool naming its Service, as the spoke-pools example", chart: "spillway-spoke", dir: "examples/spoke-pools",
			values: map[string]any{"region": "us-east1", "hubAddress": "hub.spillway.example.com:8470", "clusterSet": "prod",
				"eppService": "spillway-spoke-epp", "gatewayService": "gateway-system/inference-gateway",
				"eppPorts": []any{map[string]any{"name": "grpc-code", "port": 9003}, map[string]any{"name": "grpc-vision", "port": 9004}},
				"image":    map[string]any{"repository": "registry.example.com/spillway/spoke", "tag": "v0.1.0"}},
			// The pools are the cluster's own; the example runs in their namespace.
			drop:     []string{"CustomResourceDefinition", "InferencePool", "Certificate"},
			chartMap: inNamespace("llm"),
		},
		{
			name: "spoke with the create-namespaces component", chart: "spillway-spoke",
			values: with(map[string]any{"createNamespaces": on}),
			dir:    "testdata/spoke-create-namespaces", settings: requiredSettings, drop: []string{"CustomResourceDefinition"},
		},
		{
			name: "crds", chart: "spillway-crds", dir: "crds",
			chartMap: withoutKeep,
		},
		{
			name: "crds without the keep policy", chart: "spillway-crds", dir: "crds",
			values: map[string]any{"keep": false},
		},
		{
			name: "crds without GIE's InferencePool", chart: "spillway-crds", dir: "crds",
			values:   map[string]any{"inferencePool": map[string]any{"enabled": false}},
			chartMap: withoutKeep,
			kustMap: func(_ *testing.T, ms []manifest) []manifest {
				return without(ms, "/inferencepools.inference.networking.k8s.io")
			},
		},
		{
			name: "crds with the TokenBudget, for the hub's cluster", chart: "spillway-crds", dir: "crds",
			values:   map[string]any{"tokenBudget": on},
			chartMap: withoutKeep,
			kustMap:  withTokenBudgetCRD,
		},
		{
			name: "crds of a hub's cluster that is no member: SpillPolicy and TokenBudget", chart: "spillway-crds", dir: "crds",
			values: map[string]any{"inferencePool": map[string]any{"enabled": false}, "inferencePoolImport": map[string]any{"enabled": false},
				"mcsAPI": map[string]any{"enabled": false}, "clusterProperty": map[string]any{"enabled": false}, "tokenBudget": on},
			chartMap: withoutKeep,
			kustMap: func(t *testing.T, ms []manifest) []manifest {
				return withTokenBudgetCRD(t, slices.DeleteFunc(ms, func(m manifest) bool { return !strings.HasSuffix(m.key, "/spillpolicies.spillway.io") }))
			},
		},
		{
			name: "crds for a cluster with GIE and an MCS-API implementation", chart: "spillway-crds", dir: "crds",
			values: map[string]any{"inferencePool": map[string]any{"enabled": false}, "inferencePoolImport": map[string]any{"enabled": false},
				"mcsAPI": map[string]any{"enabled": false}, "clusterProperty": map[string]any{"enabled": false}},
			chartMap: withoutKeep,
			kustMap: func(_ *testing.T, ms []manifest) []manifest {
				return slices.DeleteFunc(ms, func(m manifest) bool { return !strings.HasSuffix(m.key, "/spillpolicies.spillway.io") })
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart := withoutChecksum(helmRender(t, filepath.Join("charts", tc.chart), tc.values))
			dir := tc.dir
			if tc.settings != nil {
				dir = settingsOverlay(t, dir, tc.settings)
			}
			kust := fromKustomize(t, dir, tc.drop...)
			if tc.chartMap != nil {
				chart = tc.chartMap(t, chart)
			}
			if tc.kustMap != nil {
				kust = tc.kustMap(t, kust)
			}
			sameManifests(t, chart, kust)
		})
	}
}

// TestHelmChartSpokeValues: what the spoke chart's values do beyond the kustomize base.
func TestHelmChartSpokeValues(t *testing.T) {
	values := func(extra map[string]any) map[string]any {
		v := maps.Clone(requiredValues)
		maps.Copy(v, extra)
		return v
	}
	get := func(ms []manifest, key string) map[string]any {
		for _, m := range ms {
			if m.key == key {
				return m.obj
			}
		}
		return nil
	}
	settings := func(ms []manifest) map[string]any {
		return get(ms, "ConfigMap spillway-system/spillway-spoke-settings")["data"].(map[string]any)
	}

	t.Run("one replica has no PodDisruptionBudget", func(t *testing.T) {
		ms := helmRender(t, "charts/spillway-spoke", values(map[string]any{"replicas": 1}))
		if get(ms, "PodDisruptionBudget spillway-system/spillway-spoke") != nil {
			t.Error("a budget of one available Pod with one replica blocks every node drain")
		}
		if r := get(ms, "Deployment spillway-system/spillway-spoke")["spec"].(map[string]any)["replicas"]; r != 1.0 {
			t.Errorf("replicas %v, want 1", r)
		}
	})
	t.Run("the hub's address", func(t *testing.T) {
		for _, tc := range []struct {
			values map[string]any
			want   string
		}{
			{values(nil), "spillway-hub.spillway-system.svc:8470"},
			{values(map[string]any{"hubAddress": "hub.example.com:8470"}), "hub.example.com:8470"},
			{values(map[string]any{"hubAddress": ""}), ""}, // the spoke without a hub
		} {
			if got := settings(helmRender(t, "charts/spillway-spoke", tc.values))["hub-address"]; got != tc.want {
				t.Errorf("hubAddress %v: hub-address %q, want %q", tc.values["hubAddress"], got, tc.want)
			}
		}
	})
	t.Run("the EPP's configuration", func(t *testing.T) {
		const cfg = "fallbacks: 1\ndefaultPriority: Critical\n"
		ms := helmRender(t, "charts/spillway-spoke", values(map[string]any{"eppConfig": cfg}))
		if got := get(ms, "ConfigMap spillway-system/spillway-spoke-config")["data"].(map[string]any)["epp.yaml"]; got != cfg {
			t.Errorf("epp.yaml %q, want eppConfig %q", got, cfg)
		}
	})
	t.Run("extra arguments", func(t *testing.T) {
		ms := helmRender(t, "charts/spillway-spoke", values(map[string]any{"extraArgs": []any{"--cluster-labels=team=ml,tier=gold"}}))
		c := get(ms, "Deployment spillway-system/spillway-spoke")["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		args := c["args"].([]any)
		if args[len(args)-1] != "--cluster-labels=team=ml,tier=gold" {
			t.Errorf("args %q do not end with the extra argument", args)
		}
	})
}

// TestHelmChartSpokeRefusesBadValues: an install the spoke would refuse at start (and crash-loop
// on) fails at `helm install`, saying which value to set.
func TestHelmChartSpokeRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"no values", nil, "region is required: this cluster's region, e.g. --set region=us-east1"},
		{"no region", map[string]any{"eppPool": "llm/chat"}, "region is required"},
		{"no pool", map[string]any{"region": "us-east1"}, "eppPool is required: namespace/name of the InferencePool"},
		{"pool without namespace", map[string]any{"region": "us-east1", "eppPool": "chat"}, `eppPool "chat": want namespace/name`},
		{"pool with an empty name", map[string]any{"region": "us-east1", "eppPool": "llm/"}, `eppPool "llm/": want namespace/name`},
		{"pool and service", map[string]any{"region": "us-east1", "eppPool": "llm/chat", "eppService": "spillway-spoke-epp"}, "eppPool and eppService: give one"},
		{"replica affinity without gossip", map[string]any{"region": "us-east1", "eppPool": "llm/chat", "replicaAffinity": map[string]any{"enabled": true}},
			"replicaAffinity needs gossip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, "charts/spillway-spoke", tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("values %v: error %v, want one saying %q", tc.values, err, tc.want)
			}
		})
	}
	if _, err := render(t, "charts/spillway-spoke", requiredValues); err != nil {
		t.Errorf("the required values %v: %v", requiredValues, err)
	}
}

// TestHelmChartConfigChangeRollsTheSpoke: a changed setting or EPP configuration changes the
// Pod template's checksum, so the Deployment rolls as kustomize's hashed ConfigMap names make it.
func TestHelmChartConfigChangeRollsTheSpoke(t *testing.T) {
	checksum := func(extra map[string]any) string {
		values := maps.Clone(requiredValues)
		maps.Copy(values, extra)
		for _, m := range helmRender(t, "charts/spillway-spoke", values) {
			if strings.HasPrefix(m.key, "Deployment ") {
				ann := m.obj["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
				return ann["checksum/config"].(string)
			}
		}
		t.Fatal("no Deployment rendered")
		return ""
	}
	base := checksum(nil)
	if again := checksum(nil); again != base {
		t.Fatalf("same values, checksums %s and %s", base, again)
	}
	for name, values := range map[string]map[string]any{
		"another region":            {"region": "us-west1"},
		"another EPP configuration": {"eppConfig": "fallbacks: 1\n"},
		"another gossip join":       {"gossip": map[string]any{"enabled": true, "join": "10.0.0.9:7946"}},
	} {
		if checksum(values) == base {
			t.Errorf("%s, the same checksum: the spoke would keep what it read at start", name)
		}
	}
}

// TestHelmChartCopies: the files the charts carry are the repository's: the spoke chart's
// epp.yaml is deploy/spoke/epp.yaml, and the CRD chart's files are deploy/crds' CRDs, byte for
// byte (Helm reads no file outside a chart, and follows no symlink out of it reliably).
func TestHelmChartCopies(t *testing.T) {
	pairs := map[string]string{"charts/spillway-spoke/files/epp.yaml": "spoke/epp.yaml"}
	for _, sub := range []string{"upstream", "clusterproperty", "spillway"} {
		srcs, err := filepath.Glob(filepath.Join("crds", sub, "*.yaml"))
		if err != nil || len(srcs) == 0 {
			t.Fatalf("no CRDs in crds/%s: %v", sub, err)
		}
		for _, src := range srcs {
			pairs[filepath.Join("charts/spillway-crds/files", filepath.Base(src))] = src
		}
	}
	copies, _ := filepath.Glob("charts/spillway-crds/files/*.yaml")
	for _, cp := range copies {
		if _, ok := pairs[cp]; !ok {
			t.Errorf("%s is a copy of no CRD in deploy/crds: remove it (and its template)", cp)
		}
	}
	for _, cp := range slices.Sorted(maps.Keys(pairs)) {
		src := pairs[cp]
		a, errA := os.ReadFile(cp)
		b, errB := os.ReadFile(src)
		switch {
		case errB != nil:
			t.Error(errB)
		case errA != nil || !bytes.Equal(a, b):
			t.Errorf("deploy/%s is not a copy of deploy/%s: run make generate, or cp deploy/%[2]s deploy/%[1]s", cp, src)
		}
	}
}

// TestHelmChartsLint: `helm lint --strict` finds nothing above INFO in any chart (an icon missing
// is INFO), with the values an install needs.
func TestHelmChartsLint(t *testing.T) {
	for dir, values := range map[string]map[string]any{
		"charts/spillway-hub":   nil,
		"charts/spillway-spoke": requiredValues,
		"charts/spillway-crds":  nil,
	} {
		for _, m := range lint.RunAll(dir, values, namespace).Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("helm lint %s: %s", dir, m)
			}
		}
	}
}

// inNamespace moves a rendering into namespace ns, as a release installed with -n ns: the
// objects' namespaces and the bindings' subjects.
func inNamespace(ns string) func(*testing.T, []manifest) []manifest {
	return func(_ *testing.T, ms []manifest) []manifest {
		for i, m := range ms {
			md := m.obj["metadata"].(map[string]any)
			if _, ok := md["namespace"]; ok {
				md["namespace"] = ns
			}
			subjects, _ := m.obj["subjects"].([]any)
			for _, s := range subjects {
				if sm, ok := s.(map[string]any); ok && sm["namespace"] != nil {
					sm["namespace"] = ns
				}
			}
			ms[i].key = keyOf(m.obj)
		}
		return ms
	}
}

// TestHelmChartHubBudgets: the hub chart's budgets become a ConfigMap of TokenBudgets that the
// hub's own parser reads back as declared, mounted where --budgets-file points; without budgets
// neither is there.
func TestHelmChartHubBudgets(t *testing.T) {
	get := func(ms []manifest, key string) map[string]any {
		for _, m := range ms {
			if m.key == key {
				return m.obj
			}
		}
		return nil
	}
	args := func(ms []manifest) []any {
		d := get(ms, "Deployment spillway-system/spillway-hub")
		return d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["args"].([]any)
	}
	none := helmRender(t, "charts/spillway-hub", nil)
	if get(none, "ConfigMap spillway-system/spillway-hub-budgets") != nil || slices.Contains(args(none), "--budgets-file=/etc/spillway/budgets/budgets.yaml") {
		t.Fatal("budgets rendered without any declared")
	}
	ms := helmRender(t, "charts/spillway-hub", map[string]any{"budgets": []any{
		map[string]any{"name": "acme", "selector": map[string]any{"tenant": "acme"}, "tokensPerWindow": 600000, "window": "1m"},
		map[string]any{"name": "llama", "selector": map[string]any{"model": "llama"}, "requestsPerWindow": 50, "count": "output"},
	}})
	if !slices.Contains(args(ms), "--budgets-file=/etc/spillway/budgets/budgets.yaml") {
		t.Fatalf("args %v: no --budgets-file", args(ms))
	}
	cm := get(ms, "ConfigMap spillway-system/spillway-hub-budgets")
	if cm == nil {
		t.Fatal("no ConfigMap spillway-hub-budgets")
	}
	set, err := budget.ParseFile([]byte(cm["data"].(map[string]any)["budgets.yaml"].(string)), "")
	if err != nil {
		t.Fatalf("the hub refuses the chart's budgets: %v", err)
	}
	if len(set.Budgets) != 2 || set.Budgets[0].Name != "acme" || set.Budgets[0].Tokens != 600000 || set.Budgets[0].Selector.Tenant != "acme" ||
		set.Budgets[1].Name != "llama" || set.Budgets[1].Requests != 50 || set.Budgets[1].Count != budget.CountOutput {
		t.Fatalf("budgets read back: %+v", set.Budgets)
	}

	// The budgets come from values or from the cluster's TokenBudgets, which the hub refuses
	// together: the install fails instead of the hub crash-looping.
	_, err = render(t, "charts/spillway-hub", map[string]any{"budgets": []any{map[string]any{"name": "acme", "tokensPerWindow": 1}},
		"tokenBudgets": map[string]any{"enabled": true}})
	if err == nil || !strings.Contains(err.Error(), "budgets and tokenBudgets.enabled both declare the fleet's budgets") {
		t.Errorf("budgets and tokenBudgets.enabled: %v, want a refusal", err)
	}
}
