package hubclient

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the client's run loop, its
// streams, the gRPC connections, the in-process hub of the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
