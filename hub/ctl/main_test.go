package ctl

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: hubctl's gRPC connections
// and the in-process hubs of the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
