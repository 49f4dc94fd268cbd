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
		md, _ := obj["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		name, _ := md["name"].(string)
		out = append(out, manifest{key: fmt.Sprintf("%s %s/%s", obj["kind"], ns, name), obj: obj})
	}
	return out
}

// helmRender renders the chart in dir as `helm template spillway dir -n spillway-system` would,
// with values over its values.yaml.
func helmRender(t *testing.T, dir string, values map[string]any) []manifest {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	vals, err := util.ToRenderValues(ch, values, common.ReleaseOptions{Name: "spillway", Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		t.Fatalf("chart %s values: %v", dir, err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatalf("render chart %s: %v", dir, err)
	}
	names := slices.Sorted(maps.Keys(files))
	var all bytes.Buffer
	for _, n := range names {
		if strings.HasSuffix(n, ".yaml") {
			all.WriteString("\n---\n" + files[n] + "\n")
		}
	}
	return parseManifests(t, dir, all.Bytes())
}

// hashed is a name kustomize gave a generated ConfigMap: the generator's name and a hash of
// the content.
var hashed = regexp.MustCompile(`^(spillway-[a-z-]+)-[a-z0-9]{10}$`)

// fromKustomize is what `kubectl apply -k dir` installs, as the charts install it: without the
// Namespace (`helm install --create-namespace` makes the release's) and without the kinds in
// drop; the generated ConfigMaps by their generator's name, and every reference to them.
func fromKustomize(t *testing.T, dir string, drop ...string) []manifest {
	t.Helper()
	var out []manifest
	for _, m := range parseManifests(t, dir, kustomize(t, dir)) {
		if k := m.obj["kind"].(string); k == "Namespace" || slices.Contains(drop, k) {
			continue
		}
		m.obj = unhash(m.obj).(map[string]any)
		md := m.obj["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		m.key = fmt.Sprintf("%s %s/%s", m.obj["kind"], ns, md["name"])
		out = append(out, m)
	}
	return out
}

// unhash replaces every generated ConfigMap's hashed name in v with the generator's name.
func unhash(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = unhash(e)
		}
	case []any:
		for i, e := range x {
			x[i] = unhash(e)
		}
	case string:
		if m := hashed.FindStringSubmatch(x); m != nil && (strings.HasSuffix(m[1], "-settings") || strings.HasSuffix(m[1], "-config")) {
			return m[1]
		}
	}
	return v
}

// withoutChecksum drops the chart's checksum/config annotation, its way to roll the spoke when
// its configuration changes (kustomize's is the hashed ConfigMap name).
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

// sameManifests fails t at the first object or field where the chart's rendering differs from
// kustomize's.
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
			t.Errorf("%s differs at %s: chart %v, kustomize %v", key, path, cv, kv)
		}
	}
}

// firstDifference returns the first path where a and b differ, and their values there.
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
	if aok && bok && len(al) == len(bl) {
		for i := range al {
			if p, av, bv, ok := firstDifference(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i]); !ok {
				return p, av, bv, false
			}
		}
		return "", nil, nil, true
	}
	return path, a, b, reflect.DeepEqual(a, b)
}

// TestHelmChartsMatchKustomize: each chart, with its defaults or with values, installs what the
// kustomize base (or an overlay setting the same) installs. A change to one without the other
// fails here, naming the object and field.
func TestHelmChartsMatchKustomize(t *testing.T) {
	t.Run("hub", func(t *testing.T) {
		sameManifests(t, helmRender(t, "charts/spillway-hub", nil), fromKustomize(t, "hub"))
	})
	t.Run("spoke", func(t *testing.T) {
		sameManifests(t, withoutChecksum(helmRender(t, "charts/spillway-spoke", nil)), fromKustomize(t, "spoke", "CustomResourceDefinition"))
	})
	t.Run("spoke values as the example overlay", func(t *testing.T) {
		values := map[string]any{"region": "us-east1", "hubAddress": "hub.spillway.example.com:8470", "clusterSet": "prod",
			"eppPool": "llm/chat", "gatewayService": "gateway-system/inference-gateway",
			"image": map[string]any{"repository": "registry.example.com/spillway/spoke", "tag": "v0.1.0"}}
		// The example's Certificate (cert-manager) is the operator's, beside the chart.
		sameManifests(t, withoutChecksum(helmRender(t, "charts/spillway-spoke", values)),
			fromKustomize(t, "examples/spoke", "CustomResourceDefinition", "Certificate"))
	})
	t.Run("crds", func(t *testing.T) {
		sameManifests(t, helmRender(t, "charts/spillway-crds", nil), fromKustomize(t, "crds"))
	})
	t.Run("crds without GIE's InferencePool", func(t *testing.T) {
		got := helmRender(t, "charts/spillway-crds", map[string]any{"inferencePool": false})
		var want []manifest
		for _, m := range fromKustomize(t, "crds") {
			if !strings.HasSuffix(m.key, "/inferencepools.inference.networking.k8s.io") {
				want = append(want, m)
			}
		}
		if len(want) != len(got) {
			t.Fatalf("%d CRDs without InferencePool, want %d", len(got), len(want))
		}
		sameManifests(t, got, want)
	})
}

// TestHelmChartConfigChangeRollsTheSpoke: a changed setting or EPP configuration changes the
// Pod template's checksum, so the Deployment rolls as kustomize's hashed ConfigMap names make it.
func TestHelmChartConfigChangeRollsTheSpoke(t *testing.T) {
	checksum := func(values map[string]any) string {
		for _, m := range helmRender(t, "charts/spillway-spoke", values) {
			if strings.HasPrefix(m.key, "Deployment ") {
				ann := m.obj["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
				return ann["checksum/config"].(string)
			}
		}
		t.Fatal("no Deployment rendered")
		return ""
	}
	base := checksum(map[string]any{"region": "us-east1"})
	if again := checksum(map[string]any{"region": "us-east1"}); again != base {
		t.Fatalf("same values, checksums %s and %s", base, again)
	}
	if other := checksum(map[string]any{"region": "us-west1"}); other == base {
		t.Fatal("another region, same checksum: the spoke would keep its old settings")
	}
	if other := checksum(map[string]any{"region": "us-east1", "eppConfig": "fallbacks: 1\n"}); other == base {
		t.Fatal("another EPP configuration, same checksum")
	}
}

// TestHelmChartCopies: the files the charts carry are the repository's: the spoke chart's
// epp.yaml is deploy/spoke/epp.yaml, and the CRD chart's CRDs are deploy/crds' (hack/crds.sh
// copies both; `make generate`).
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
	if len(copies) != len(pairs)-1 {
		t.Errorf("charts/spillway-crds/files holds %d CRDs, deploy/crds %d: run make generate", len(copies), len(pairs)-1)
	}
	for cp, src := range pairs {
		a, errA := os.ReadFile(cp)
		b, errB := os.ReadFile(src)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is not a copy of %s (%v, %v): run make generate", cp, src, errA, errB)
		}
	}
}

// TestHelmChartsLint: `helm lint` finds nothing above INFO in any chart (an icon missing is
// INFO), with the values an install needs.
func TestHelmChartsLint(t *testing.T) {
	for dir, values := range map[string]map[string]any{
		"charts/spillway-hub":   nil,
		"charts/spillway-spoke": {"region": "us-east1", "eppPool": "llm/chat"},
		"charts/spillway-crds":  nil,
	} {
		l := lint.RunAll(dir, values, namespace)
		for _, m := range l.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("helm lint %s: %s", dir, m)
			}
		}
	}
}
