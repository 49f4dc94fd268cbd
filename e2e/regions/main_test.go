package regions

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: load runs and the watchers
// of the spokes' spill targets.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
