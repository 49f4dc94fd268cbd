package affinity

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestMain fails the package's tests when a goroutine outlives them: memberlist's listeners and
// probes, and the replicator's loops.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// settled makes the test wait, at its very end, until the goroutines started since settled was
// called have ended (memberlist's Shutdown does not wait for a probe in flight). A test calls it
// first, so that its cleanup runs after every other (cleanups run last registered first).
func settled(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		testkit.Eventually(t, 10*time.Second, "the stopped replicas' goroutines end", func() error { return goleak.Find(before) })
	})
}
