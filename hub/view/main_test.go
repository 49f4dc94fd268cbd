package view

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: Follow's load and watch
// loop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
