package budget

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// APIVersion and Kind of a TokenBudget, the object a budget is declared as: in the hub's
// budgets file, and in Kubernetes (deploy/crds).
const (
	APIVersion = "spillway.io/v1alpha1"
	Kind       = "TokenBudget"
)

// object is a TokenBudget as written.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec Spec `json:"spec"`
}

// maxFileBytes bounds a budgets file.
const maxFileBytes = 16 << 20

// ParseFile reads a budgets file: TokenBudget objects as YAML documents (or JSON), the same
// manifests kubectl applies. Unknown fields, another kind, a duplicate or invalid budget are
// errors naming the document; nothing of a file with an error is used.
func ParseFile(data []byte, tenantHeader string) (Set, error) {
	if len(data) > maxFileBytes {
		return Set{}, fmt.Errorf("%w: the budgets file is %d bytes, more than %d", ErrInvalid, len(data), maxFileBytes)
	}
	set := Set{TenantHeader: tenantHeader}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Set{}, fmt.Errorf("%w: document %d: %w", ErrInvalid, n, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err == nil && string(j) == "null" {
			continue // an empty document, or comments only
		}
		var o object
		if err := yaml.UnmarshalStrict(doc, &o); err != nil {
			return Set{}, fmt.Errorf("%w: document %d: %w", ErrInvalid, n, err)
		}
		if o.APIVersion != APIVersion || o.Kind != Kind {
			return Set{}, fmt.Errorf("%w: document %d is %s %s, not %s %s", ErrInvalid, n, o.APIVersion, o.Kind, APIVersion, Kind)
		}
		o.Spec.Name = o.Metadata.Name
		set.Budgets = append(set.Budgets, o.Spec)
	}
	set.Sort()
	if err := set.Validate(); err != nil {
		return Set{}, err
	}
	return set, nil
}
