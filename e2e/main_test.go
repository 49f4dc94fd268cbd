package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: in-process hubs and spokes,
// controllers, the readers of the processes' output, load goroutines. It removes the binaries
// the tests built (bins), unless they came from $SPILLWAY_BIN_DIR.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" && os.Getenv("SPILLWAY_BIN_DIR") == "" {
			_ = os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}
