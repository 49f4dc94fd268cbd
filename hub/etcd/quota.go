package etcd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const (
	// MaxDefaultQuotaBytes caps the default backend quota: etcd's own default, far more than a
	// fleet's registry needs.
	MaxDefaultQuotaBytes = 2 << 30
	// MinQuotaBytes is the smallest quota accepted: below it etcd raises its NOSPACE alarm almost at
	// once and the hub can no longer write.
	MinQuotaBytes = 64 << 20
)

// DefaultQuotaBytes is the backend quota for a volume of volumeBytes: 80% of the volume, at
// most MaxDefaultQuotaBytes, so that etcd raises its alarm (and the hub refuses writes) before
// the volume fills.
func DefaultQuotaBytes(volumeBytes int64) int64 {
	return min(MaxDefaultQuotaBytes, volumeBytes/5*4)
}

// VolumeBytes returns the size of the file system holding path, or, when path does not exist
// yet, holding its nearest existing parent.
func VolumeBytes(path string) (int64, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(p, &st)
		if err == nil {
			return int64(st.Blocks) * int64(st.Bsize), nil //nolint:unconvert // the field types differ by platform
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, os.ErrNotExist) || parent == p {
			return 0, fmt.Errorf("size of the volume holding %s: %w", path, err)
		}
		p = parent
	}
}
