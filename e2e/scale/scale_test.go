package scale

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := range 1000 {
		h.record(time.Duration(i) * time.Millisecond)
	}
	h.record(time.Hour) // beyond the last bucket: counts there
	if got := h.quantile(0.5); got < 499*time.Millisecond || got > 501*time.Millisecond {
		t.Errorf("p50 %s, want 500ms within a bucket", got)
	}
	if got := h.quantile(0.99); got < 989*time.Millisecond || got > 991*time.Millisecond {
		t.Errorf("p99 %s, want 990ms within a bucket", got)
	}
	if got := h.quantile(1); got != histMax {
		t.Errorf("max %s, want the last bucket's edge %s", got, histMax)
	}
	h.reset()
	if h.count() != 0 || h.quantile(0.5) != 0 {
		t.Error("reset kept samples")
	}
}

// TestSmallFleet runs the load driver as make bench-scale does, on a fleet of 12 spokes for a
// few seconds: the hub process, mutual TLS, the staleness measured at the importing spokes and
// at hubctl's watch, the restart. It keeps the driver from rotting between benchmark runs.
func TestSmallFleet(t *testing.T) {
	bin := os.Getenv("SPILLWAY_BIN_DIR")
	if bin == "" {
		t.Skip("SPILLWAY_BIN_DIR is not set: run make build first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		BinDir: bin, WorkDir: t.TempDir(), Spokes: 12, Pools: 2, Endpoints: 5, ReportInterval: 500 * time.Millisecond,
		ImportFraction: 0.25, Settle: time.Second, Measure: 3 * time.Second, ConvergeTimeout: time.Minute, Restart: true,
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Importers != 3 || res.Pools != 24 {
		t.Errorf("%d importers of %d pools, want 3 of 24", res.Importers, res.Pools)
	}
	// Three importers, 24 pools reported twice a second, 3 seconds: about 430 samples.
	if res.StalenessSamples < 200 || res.StalenessP50Ms <= 0 || res.StalenessP99Ms < res.StalenessP50Ms || res.StalenessP99Ms > 5000 {
		t.Errorf("staleness: %d samples, p50 %.1f ms, p99 %.1f ms", res.StalenessSamples, res.StalenessP50Ms, res.StalenessP99Ms)
	}
	if res.WatchSamples < 50 || res.WatchStalenessP99Ms > 5000 {
		t.Errorf("hubctl's watch: %d samples, p99 %.1f ms", res.WatchSamples, res.WatchStalenessP99Ms)
	}
	if res.HubCPUCores <= 0 || res.HubRSSMiB <= 0 || res.HubctlGetPoolsMs <= 0 || res.ReconnectConvergeS <= 0 {
		t.Errorf("hub cpu %.2f, rss %.0f MiB, hubctl %.0f ms, reconnect %.1f s: each must be measured", res.HubCPUCores, res.HubRSSMiB, res.HubctlGetPoolsMs, res.ReconnectConvergeS)
	}
	// Capacity never reaches etcd: in the steady state the registry does not move.
	if res.EtcdWritesPerS != 0 {
		t.Errorf("etcd writes %.2f/s in the steady state, want none", res.EtcdWritesPerS)
	}
	if res.SessionsEnded != 0 {
		t.Errorf("%d sessions broke before the restart", res.SessionsEnded)
	}
}
