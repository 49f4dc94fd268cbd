package gossip

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: memberlist's listeners and
// probes, and the member's run loop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
