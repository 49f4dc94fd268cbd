package localfleet

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them (a process's waiter, say).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
