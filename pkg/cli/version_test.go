package cli_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/cli"
)

func runVersion(args ...string) (string, error) {
	root := &cobra.Command{Use: "hub", RunE: func(*cobra.Command, []string) error { return nil }}
	root.AddCommand(cli.VersionCommand())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestVersionCommand: `version` prints the binary's name and build on one line, the build as
// JSON with -o json, and refuses another output.
func TestVersionCommand(t *testing.T) {
	own := buildinfo.Get()
	out, err := runVersion("version")
	if err != nil || out != "hub "+own.String()+"\n" {
		t.Errorf("version: %q, %v; want %q", out, err, "hub "+own.String())
	}
	out, err = runVersion("version", "-o", "json")
	var got buildinfo.Info
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got != own {
		t.Errorf("version -o json: %q, %v; want %+v", out, err, own)
	}
	if _, err := runVersion("version", "-o", "yaml"); err == nil || !strings.Contains(err.Error(), `--output "yaml"`) {
		t.Errorf("version -o yaml: %v, want an error naming the output", err)
	}
}
