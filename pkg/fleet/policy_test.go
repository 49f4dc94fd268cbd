package fleet

import (
	"slices"
	"strings"
	"testing"
)

func export(ns, name string) Export {
	return Export{Pool: PoolRef{Namespace: ns, Name: name}, TargetPorts: []uint32{8000}}
}

func keptPools(kept []Export) []string {
	out := make([]string, 0, len(kept))
	for _, e := range kept {
		out = append(out, e.Pool.String())
	}
	return out
}

func TestExportPolicyNamespaces(t *testing.T) {
	p := ExportPolicy{DeniedNamespaces: []string{"kube-system", "ml"}, AllowedNamespaces: []string{"default", "ml"}}
	for _, tc := range []struct {
		ns   string
		want string // a part of the refusal; empty: allowed
	}{
		{"default", ""},
		{"kube-system", "namespace kube-system is denied for exports by the hub (--denied-export-namespaces)"},
		// Denied wins over allowed.
		{"ml", "namespace ml is denied for exports by the hub"},
		{"team-x", "namespace team-x is not among the hub's --allowed-export-namespaces (default, ml)"},
	} {
		got := p.NamespaceRefusal(tc.ns)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("NamespaceRefusal(%q) = %q, want %q", tc.ns, got, tc.want)
		}
	}
	if got := (ExportPolicy{}).NamespaceRefusal("kube-system"); got != "" {
		t.Errorf("the zero policy refuses kube-system: %q", got)
	}
	many := ExportPolicy{AllowedNamespaces: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}}
	if got := many.NamespaceRefusal("z"); !strings.HasSuffix(got, "(a, b, c, d, e, f, g, h and 2 more)") {
		t.Errorf("a long allowed list: %q, want the first 8 and a count", got)
	}
}

func TestExportPolicyApply(t *testing.T) {
	p := ExportPolicy{DeniedNamespaces: []string{"kube-system"}, MaxExports: 2}
	// Unsorted, with a pool twice and a denied pool that sorts first.
	in := []Export{export("default", "c"), export("kube-system", "a"), export("default", "b"), export("default", "d"),
		export("default", "b"), export("default", "a")}
	in[4].TargetPorts = []uint32{9000}
	kept, refused := p.Apply(in)
	if got := keptPools(kept); !slices.Equal(got, []string{"default/a", "default/b"}) {
		t.Fatalf("kept %v, want the first two allowed pools in order", got)
	}
	if !slices.Equal(kept[1].TargetPorts, []uint32{9000}) {
		t.Errorf("a pool listed twice kept %v, want its last export", kept[1].TargetPorts)
	}
	want := map[string]string{
		"kube-system/a": RuleNamespace,
		"default/c":     RuleExportLimit,
		"default/d":     RuleExportLimit,
	}
	if len(refused) != len(want) {
		t.Fatalf("refused %v, want %v", refused, want)
	}
	for p, r := range refused {
		if want[p.String()] != r.Rule {
			t.Errorf("%s refused by %q (%s), want %q", p, r.Rule, r.Message, want[p.String()])
		}
	}
	if msg := refused[PoolRef{Namespace: "default", Name: "c"}].Message; !strings.Contains(msg, "at most 2 exports per cluster (--max-exports-per-cluster)") {
		t.Errorf("the limit's message %q does not name the limit", msg)
	}

	// The same pools in another order give the same choice.
	slices.Reverse(in)
	in[1].TargetPorts, in[3].TargetPorts = []uint32{8000}, []uint32{9000} // the last of default/b still has 9000
	again, _ := p.Apply(in)
	if !slices.EqualFunc(kept, again, Export.Equal) {
		t.Errorf("another order kept %v, want %v", keptPools(again), keptPools(kept))
	}

	// No limit, no namespace rules: everything, sorted.
	kept, refused = ExportPolicy{}.Apply(in)
	if len(refused) != 0 || len(kept) != 5 {
		t.Errorf("the zero policy kept %v and refused %v, want all 5 pools", keptPools(kept), refused)
	}
}

func TestExportPolicyEqual(t *testing.T) {
	a := ExportPolicy{AllowedNamespaces: []string{"x"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 3}
	if !a.Equal(ExportPolicy{AllowedNamespaces: []string{"x"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 3}) {
		t.Error("equal policies differ")
	}
	for _, b := range []ExportPolicy{
		{AllowedNamespaces: []string{"x"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 4},
		{AllowedNamespaces: []string{"x", "y"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 3},
		{AllowedNamespaces: []string{"x"}, MaxExports: 3},
	} {
		if a.Equal(b) {
			t.Errorf("%+v equals %+v", a, b)
		}
	}
}
