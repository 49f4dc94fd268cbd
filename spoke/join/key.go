package join

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// joinKey returns the key a join asks a certificate for, and a CSR for id with it.
//
// The hub keeps one request per cluster and refuses a request for another key while it is
// pending, so a spoke restarted while its request waits for an admin must ask again with the
// same key. The key is therefore written to dir's tls.key (mode 0600, atomically) before the hub
// hears of it, and a later join reuses it while dir holds no certificate, as the kubelet's TLS
// bootstrap keeps its key. A tls.key beside the marker is the key of credentials a join stored
// earlier, whose certificate was removed to join again: it is not reused (the cluster may have
// been revoked for it), and the marker goes, since no certificate is left to renew.
func joinKey(dir string, id tlsconfig.Identity, log *slog.Logger) (csrPEM, keyPEM []byte, err error) {
	keyFile := filepath.Join(dir, tlsconfig.KeyFile)
	if !Joined(dir) {
		keyPEM, err := os.ReadFile(keyFile)
		switch {
		case err == nil:
			csrPEM, err := csrFor(id, keyPEM)
			if err == nil {
				log.Info("asking again with the join key of an earlier start", "file", keyFile)
				return csrPEM, keyPEM, nil
			}
			log.Warn("the join key of an earlier start is unusable; making a new one", "file", keyFile, "err", err)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("credentials directory: %w", err)
		}
	}
	csrPEM, keyPEM, err = tlsconfig.NewCSR(id)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("credentials directory: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, MarkerFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("credentials directory: %w", err)
	}
	if err := tlsconfig.WriteFileAtomic(filepath.Join(dir, tlsconfig.KeyFile), keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, nil, err
	}
	return csrPEM, keyPEM, nil
}

// removeJoinKey removes the join key of dir, which holds no certificate.
func removeJoinKey(dir string) error {
	if err := os.Remove(filepath.Join(dir, tlsconfig.KeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("credentials directory: %w", err)
	}
	return nil
}

// csrFor makes a CSR for id with the key of keyPEM, which must be what tlsconfig.NewCSR makes:
// one PKCS #8 ECDSA P-256 key.
func csrFor(id tlsconfig.Identity, keyPEM []byte) ([]byte, error) {
	block, rest := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("want one PEM block of type PRIVATE KEY")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("want an ECDSA P-256 key")
	}
	return tlsconfig.CSRFor(id, key)
}
