package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a Sync stream's receive
// loop or lease renewer, the fleet view's follower, the embedded etcd, a gRPC server or client.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
