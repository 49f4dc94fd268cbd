package gateway_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the gateway's handlers and
// ext_proc streams, the simulator behind it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
