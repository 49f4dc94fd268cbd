package registry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: lease renewal, watches,
// the etcd client and the embedded etcd.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
