package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/spillway-io/spillway"

type goPackage struct {
	ImportPath string
	Doc        string
	Imports    []string
	GoFiles    []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-C", "..", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []goPackage
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestEveryPackageIsDocumented: a package comment says what each package is for.
func TestEveryPackageIsDocumented(t *testing.T) {
	for _, p := range listPackages(t) {
		if len(p.GoFiles) > 0 && strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package comment", p.ImportPath)
		}
	}
}

// TestImportBoundaries enforces the layout of docs/architecture.md: pkg/ never imports hub/, spoke/ or e2e/;
// product code (pkg/, hub/, spoke/, proto/) never imports the test and demo tooling under e2e/;
// hub/ and spoke/ never import each other; hubctl talks to the hub only through proto/; the
// hub's domain packages know no protobuf. Test files may import e2e/ tooling: go list reports
// their imports apart, so only what ships is checked.
func TestImportBoundaries(t *testing.T) {
	rel := func(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }
	under := func(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }
	for _, p := range listPackages(t) {
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := rel(imp)
			switch {
			case under(from, "pkg") && (under(to, "hub") || under(to, "spoke") || under(to, "e2e")):
				t.Errorf("%s imports %s: pkg/ must not depend on hub/, spoke/ or e2e/", from, to)
			case (under(from, "hub") || under(from, "spoke") || under(from, "proto")) && under(to, "e2e"):
				t.Errorf("%s imports %s: product code must not depend on the test and demo tooling in e2e/", from, to)
			case under(from, "hub") && under(to, "spoke"), under(from, "spoke") && under(to, "hub"):
				t.Errorf("%s imports %s: hub/ and spoke/ must not import each other", from, to)
			case (under(from, "hub/ctl") || under(from, "hub/cmd/hubctl")) && under(to, "hub") && !under(to, "hub/ctl"):
				t.Errorf("%s imports %s: hubctl talks to the hub only through proto/", from, to)
			case (under(from, "hub/registry") || under(from, "hub/view")) && under(to, "proto"):
				t.Errorf("%s imports %s: domain packages import no protobuf", from, to)
			}
		}
	}
}

// TestProductHoldsNoTestTooling: a package under pkg/, hub/ or spoke/ that imports "testing" in
// its non-test files is test tooling, and test tooling lives under e2e/.
func TestProductHoldsNoTestTooling(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if strings.HasPrefix(rel, "e2e") || strings.HasPrefix(rel, "deploy") {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "testing" || strings.HasPrefix(imp, "testing/") {
				t.Errorf("%s imports %s outside its tests: test tooling belongs under e2e/", rel, imp)
			}
		}
	}
}
