package loadgen

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: the generator's request
// goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
