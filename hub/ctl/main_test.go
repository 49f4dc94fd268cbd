package ctl

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: hubctl's gRPC connections
// and the in-process hubs of the tests. The tests never read the configuration file of the user
// who runs them: $SPILLWAY_HUBCTL_CONFIG names one that does not exist, unless a test sets it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubctl-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv(ConfigEnv, filepath.Join(dir, "none.yaml"))
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}
