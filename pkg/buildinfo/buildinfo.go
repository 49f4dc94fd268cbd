// Package buildinfo says which build a Spillway binary is: its version, the commit it was built
// from and the Go version that built it. The Makefile sets the commit at link time, and a
// release the version (-ldflags "-X github.com/spillway-io/spillway/pkg/buildinfo.version=v0.4.0");
// otherwise the version is the module's as the Go toolchain stamped it ("(devel)" for a build
// from a checkout), and the commit what the toolchain stamps from the checkout's git state (with
// -buildvcs, which the Makefile does not rely on). Every binary prints it with its `version`
// command, and the hub and the spoke export it as spillway_build_info.
package buildinfo

import (
	"cmp"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at link time: version for a release, revision (the commit) and modified ("true" when the
// checkout had changes) by the Makefile.
var version, revision, modified string

// unknown stands for what the build did not stamp.
const unknown = "unknown"

// Info is one binary's build.
type Info struct {
	// Version is the release version, or the module's as the toolchain stamped it.
	Version string `json:"version"`
	// Revision is the commit built, and Modified whether the checkout had changes beside it.
	Revision string `json:"revision"`
	Modified bool   `json:"modified,omitempty"`
	// Time is the commit's time (RFC 3339), as git stamped it.
	Time      string `json:"time,omitempty"`
	GoVersion string `json:"goVersion"`
}

// Get returns this binary's build.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return FromBuildInfo(bi, Info{Version: version, Revision: revision, Modified: modified == "true"})
}

// FromBuildInfo reads the Info of a build from what the toolchain stamped into it and what was
// set at link time (linked), which wins where it is set.
func FromBuildInfo(bi *debug.BuildInfo, linked Info) Info {
	i := Info{Version: cmp.Or(linked.Version, bi.Main.Version, unknown), GoVersion: cmp.Or(bi.GoVersion, unknown)}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	if linked.Revision != "" {
		i.Revision, i.Modified, i.Time = linked.Revision, linked.Modified, ""
	}
	i.Revision = cmp.Or(i.Revision, unknown)
	return i
}

// String is the build on one line: "v0.4.0 (commit 0123456789ab, modified, go1.25.4)".
func (i Info) String() string {
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	parts := []string{"commit " + rev}
	if i.Modified {
		parts = append(parts, "modified")
	}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	parts = append(parts, i.GoVersion)
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}

// Short is the build in a word, as a spoke reports it to the hub: the version of a release, or
// "devel-" and the commit's first 12 digits ("-dirty" after them for a modified checkout).
func (i Info) Short() string {
	if i.Version != "(devel)" && i.Version != unknown {
		return i.Version
	}
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	s := "devel-" + rev
	if i.Modified {
		s += "-dirty"
	}
	return s
}

// Collector returns spillway_build_info for component ("hub", "spoke"): a gauge of 1 whose labels
// say the build, for joining with the component's other series and for seeing which versions
// run in a fleet.
func Collector(component string, i Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spillway_build_info",
		Help: "Always 1; the labels say which build of Spillway the component runs.",
		ConstLabels: prometheus.Labels{
			"component": component, "version": i.Version, "revision": i.Revision, "goversion": i.GoVersion,
		},
	})
	g.Set(1)
	return g
}
