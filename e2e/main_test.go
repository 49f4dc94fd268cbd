package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: in-process hubs and spokes,
// controllers, the readers of the processes' output, load goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
