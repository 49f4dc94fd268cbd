package modelsim_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the simulator's servers and
// engines, and the tests' clients.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
