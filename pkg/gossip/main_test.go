package gossip

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestMain fails the package's tests when a goroutine outlives them: memberlist's listeners and
// probes, and the member's run loop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// settled returns a function that waits until the goroutines started since settled was called
// have ended. memberlist's Shutdown does not wait for a probe in flight, which ends within its
// health-scaled probe interval (at most 8 × 500 ms); a test that stopped its members defers it
// first, so that it runs last.
func settled(t *testing.T) func() {
	before := goleak.IgnoreCurrent()
	return func() {
		testkit.Eventually(t, 10*time.Second, "the stopped members' goroutines end", func() error { return goleak.Find(before) })
	}
}
