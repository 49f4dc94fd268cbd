package buildinfo_test

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/pkg/buildinfo"
)

func stamped(version string, settings ...string) *debug.BuildInfo {
	bi := &debug.BuildInfo{GoVersion: "go1.25.4", Main: debug.Module{Path: "github.com/spillway-io/spillway", Version: version}}
	for i := 0; i+1 < len(settings); i += 2 {
		bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
	}
	return bi
}

const rev = "0123456789abcdef0123456789abcdef01234567"

// TestInfoFromWhatTheToolchainStamped: a checkout's build says its commit and whether it was
// modified; a release's link-time version wins over the module's; what was not stamped is
// "unknown", never empty.
func TestInfoFromWhatTheToolchainStamped(t *testing.T) {
	dev := buildinfo.FromBuildInfo(stamped("(devel)", "vcs.revision", rev, "vcs.time", "2026-11-28T12:00:00Z", "vcs.modified", "true"), buildinfo.Info{})
	if dev.Version != "(devel)" || dev.Revision != rev || !dev.Modified || dev.Time != "2026-11-28T12:00:00Z" || dev.GoVersion != "go1.25.4" {
		t.Errorf("checkout build: %+v", dev)
	}
	if got, want := dev.String(), "(devel) (commit 0123456789ab, modified, 2026-11-28T12:00:00Z, go1.25.4)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := dev.Short(), "devel-0123456789ab-dirty"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}

	rel := buildinfo.FromBuildInfo(stamped("(devel)", "vcs.revision", rev, "vcs.modified", "false"), buildinfo.Info{Version: "v0.4.0"})
	if rel.Version != "v0.4.0" || rel.Revision != rev || rel.Modified || rel.Short() != "v0.4.0" {
		t.Errorf("release build: %+v, short %q", rel, rel.Short())
	}

	// The Makefile's commit, without the toolchain's stamp (-buildvcs=false).
	made := buildinfo.FromBuildInfo(stamped("(devel)"), buildinfo.Info{Revision: rev, Modified: true})
	if made.Revision != rev || !made.Modified || made.Short() != "devel-0123456789ab-dirty" {
		t.Errorf("linked commit: %+v, short %q", made, made.Short())
	}

	bare := buildinfo.FromBuildInfo(&debug.BuildInfo{}, buildinfo.Info{})
	if bare.Version != "unknown" || bare.Revision != "unknown" || bare.GoVersion != "unknown" || bare.Short() != "devel-unknown" {
		t.Errorf("nothing stamped: %+v, short %q", bare, bare.Short())
	}
	if len(dev.Short()) > 64 {
		t.Errorf("Short() %q is longer than the 64 bytes the hub takes for a cluster's version", dev.Short())
	}
}

// TestBuildInfoMetric: spillway_build_info is 1 with the component and the build in its labels.
func TestBuildInfoMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	info := buildinfo.FromBuildInfo(stamped("(devel)", "vcs.revision", rev), buildinfo.Info{Version: "v0.4.0"})
	reg.MustRegister(buildinfo.Collector("hub", info))
	want := `# HELP spillway_build_info Always 1; the labels say which build of Spillway the component runs.
# TYPE spillway_build_info gauge
spillway_build_info{component="hub",goversion="go1.25.4",revision="` + rev + `",version="v0.4.0"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "spillway_build_info"); err != nil {
		t.Error(err)
	}
}
