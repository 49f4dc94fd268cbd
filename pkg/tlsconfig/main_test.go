package tlsconfig

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the reload loops of key
// pairs and CA pools, and the test servers.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
