package kube

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the informer, Run and Lead,
// the clients of the test's API server.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
