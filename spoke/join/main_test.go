package join

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the renewer, the gRPC
// connections, the fake hub.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
