package app

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine of a hub they ran (servers, etcd, reloads,
// gossip) outlives it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
