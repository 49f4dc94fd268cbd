package budget

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// object is a TokenBudget as written; its spec is read by decodeSpec.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// decodeSpec reads a TokenBudget's spec (JSON; empty or null is the zero spec) strictly, an
// unknown field being an error, and completes it.
func decodeSpec(name string, spec []byte) (Spec, error) {
	var s Spec
	if len(bytes.TrimSpace(spec)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(spec))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return Spec{}, fmt.Errorf("spec: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return Spec{}, errors.New("spec: data after the object")
		}
	}
	s.Name = name
	s.Complete()
	return s, nil
}

// ParseSpec reads the spec (JSON) of the TokenBudget named name, as the hub reads the objects of
// its cluster (hub/kube): strictly, the defaults filled in, and checked by Spec.Validate, the
// same code that checks a budgets file's. Its errors wrap ErrInvalid and name the budget.
func ParseSpec(name string, spec []byte) (Spec, error) {
	s, err := decodeSpec(name, spec)
	if err != nil {
		return Spec{}, fmt.Errorf("%w %q: %w", ErrInvalid, name, err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
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
		s, err := decodeSpec(o.Metadata.Name, o.Spec)
		if err != nil {
			return Set{}, fmt.Errorf("%w: document %d: %w", ErrInvalid, n, err)
		}
		set.Budgets = append(set.Budgets, s)
	}
	set.Sort()
	if err := set.Validate(); err != nil {
		return Set{}, err
	}
	return set, nil
}
