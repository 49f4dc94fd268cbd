package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// updateDoc replaces the scale section of the markdown file at path with the run's figures.
func updateDoc(path string, rep report) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const begin, end = "<!-- scale-benchmark:begin (written by make bench-scale) -->", "<!-- scale-benchmark:end -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section", path, begin, end)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%s\nRun %s with `%s`: %v pools of %v endpoints per spoke, reports every %v, %.0f %% of the spokes importing every pool (in the rows of %v importers, only those import).\n\n",
		begin, rep.Date, rep.Command, rep.Options["pools_per_spoke"], rep.Options["endpoints_per_pool"], rep.Options["report_interval"],
		100*rep.Options["import_fraction"].(float64), rep.Options["few_importers"])
	s.WriteString("| spokes | importers | replicas | staleness p50 / p99 ms | hubctl watch p50 / p99 ms | hub CPU cores | hub RSS MiB | driver CPU cores | etcd writes/s | connect s | restart converge s | snapshots in restart | `get pools` ms |\n")
	s.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	rows := append(slices.Clone(rep.Results), rep.FewImporters...)
	if rep.TwoReplicas != nil {
		rows = append(rows, *rep.TwoReplicas)
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(&s, "| %d | %d | %d | failed: %s |  |  |  |  |  |  |  |  |  |\n", r.Spokes, r.Importers, r.Replicas, oneLine(r.Error))
			continue
		}
		fmt.Fprintf(&s, "| %d | %d | %d | %.0f / %.0f | %.0f / %.0f | %.2f | %.0f | %.2f | %.1f | %.1f | %.1f | %.0f | %.0f |\n",
			r.Spokes, r.Importers, r.Replicas, r.StalenessP50Ms, r.StalenessP99Ms, r.WatchStalenessP50Ms, r.WatchStalenessP99Ms, r.HubCPUCores, r.HubRSSMiB,
			r.DriverCPUCores, r.EtcdWritesPerS, r.ConnectConvergeS, r.ReconnectConvergeS, r.ReconnectSnapshots, r.HubctlGetPoolsMs)
	}
	if t := rep.TwoReplicas; t != nil && t.Error == "" {
		s.WriteString("\nTwo replicas, per replica in the steady state:")
		for _, p := range t.PerReplica {
			fmt.Fprintf(&s, " %s %.0f sessions, %.2f cores, %.0f MiB;", p.HubID, p.Sessions, p.CPUCores, p.RSSMiB)
		}
		s.WriteString(" the restart is of hub-0, whose spokes moved to hub-1 meanwhile.\n")
	}
	fmt.Fprintf(&s, "\n![hub CPU, memory and staleness against the number of spokes; dashed: few importers](benchmarks/scale.png)\n%s", end)
	doc = doc[:i] + s.String() + doc[j+len(end):]
	return os.WriteFile(path, []byte(doc), 0o644)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if r := []rune(s); len(r) > 160 {
		s = string(r[:160]) + "…"
	}
	return s
}
