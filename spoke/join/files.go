package join

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// MarkerFile, in a credentials directory, says that its credentials came from the join flow,
// so that the spoke renews them.
const MarkerFile = ".spillway-joined"

const markerText = "The join flow wrote the credentials of this directory; the spoke renews tls.crt while this file exists.\n"

// HasCertificate reports whether dir holds a certificate (tls.crt). A directory that does not
// exist holds none.
func HasCertificate(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, tlsconfig.CertFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("credentials directory: %w", err)
}

// Joined reports whether the credentials of dir came from the join flow (its marker file
// exists), which makes them the spoke's to renew.
func Joined(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, MarkerFile))
	return err == nil
}

// writeCredentials writes the CA bundle, the key, the marker and, last, the certificate into
// dir, each atomically. Readers that reload the key pair may see the new key with the old
// certificate for a moment; they keep the previous pair until both match.
func writeCredentials(dir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("credentials directory: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{tlsconfig.CAFile, caPEM, 0o644},
		{tlsconfig.KeyFile, keyPEM, 0o600},
		{MarkerFile, []byte(markerText), 0o644},
		{tlsconfig.CertFile, certPEM, 0o644},
	} {
		if err := tlsconfig.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// syncDir flushes the directory's entries, so that the renames survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("credentials directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("credentials directory: %w", err)
	}
	return nil
}

// readBundle reads the CA bundle of dir.
func readBundle(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, tlsconfig.CAFile))
	if err != nil {
		return nil, fmt.Errorf("credentials directory: %w", err)
	}
	return b, nil
}
