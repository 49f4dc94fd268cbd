package deploy

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/spill"
)

// TestSpillPolicySchemaDefaultsAreTheCodeDefaults: a SpillPolicy that sets nothing but its pool,
// defaulted by the API server from the CRD's schema, is the policy a pool without a SpillPolicy
// gets (spill.DefaultPolicy), and every field the decision reads is defaulted by the schema.
func TestSpillPolicySchemaDefaultsAreTheCodeDefaults(t *testing.T) {
	data, err := os.ReadFile("crds/spillway/spillway.io_spillpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%d versions, want 1", len(crd.Spec.Versions))
	}
	specSchema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema["properties"].(map[string]any)["spec"].(map[string]any)
	obj := map[string]any{"poolRef": map[string]any{"name": "chat"}}
	applyDefaults(specSchema, obj)
	for _, f := range []string{"eligiblePriorities", "tripMark", "clearMark", "minDwell", "prefillTokensPerSecond", "freshness", "mode", "failover"} {
		if _, ok := obj[f]; !ok {
			t.Errorf("the schema gives %s no default", f)
		}
	}
	b, _ := json.Marshal(obj)
	var ps spill.PolicySpec
	if err := json.Unmarshal(b, &ps); err != nil {
		t.Fatal(err)
	}
	got, err := ps.Policy()
	if err != nil {
		t.Fatalf("the defaulted spec %s is not a valid policy: %v", b, err)
	}
	if want := spill.DefaultPolicy(); !reflect.DeepEqual(got, want) {
		t.Errorf("the schema's defaults make %+v, spill.DefaultPolicy is %+v", got, want)
	}
}

// applyDefaults does what the API server's structural defaulting does to obj: a missing
// property with a default takes it, then objects are defaulted inside.
func applyDefaults(schema map[string]any, obj map[string]any) {
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		ps := p.(map[string]any)
		if _, ok := obj[name]; !ok {
			if d, ok := ps["default"]; ok {
				b, _ := json.Marshal(d)
				var v any
				_ = json.Unmarshal(b, &v)
				obj[name] = v
			}
		}
		if child, ok := obj[name].(map[string]any); ok {
			applyDefaults(ps, child)
		}
	}
}
