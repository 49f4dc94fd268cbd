package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestImagesAreReproducibleAndStamped builds the hubctl image twice, into two directories: the
// archives are byte for byte the same; the archive holds an OCI layout naming the image by its
// reference; the image runs as 65532 with the version in its labels; and the binary in its layer,
// run, says the version and commit it was built with.
func TestImagesAreReproducibleAndStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a static binary twice")
	}
	ctx := context.Background()
	o := options{version: "v9.8.7-test", revision: "0123456789abcdef0123456789abcdef01234567", repo: "registry.test/spillway",
		platform: "linux/" + goarch(t), root: "../..", created: time.Unix(1_790_000_000, 0).UTC(), only: []string{"hubctl"}}
	var digests []string
	var results []built
	for i := range 2 {
		o.out = filepath.Join(t.TempDir(), "images")
		b, err := build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 1 {
			t.Fatalf("built %d images, want hubctl's", len(b))
		}
		d, err := fileDigest(b[0].archive)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d: %s %s, archive sha256:%s", i+1, b[0].ref, b[0].digest, d)
		digests, results = append(digests, d), append(results, b[0])
	}
	if digests[0] != digests[1] || results[0].digest != results[1].digest {
		t.Fatalf("two builds differ: archives %v, images %s and %s", digests, results[0].digest, results[1].digest)
	}
	b := results[1]
	if b.ref != "registry.test/spillway/hubctl:v9.8.7-test" {
		t.Fatalf("ref %s", b.ref)
	}

	// The archive is an OCI layout whose index names the image.
	dir := t.TempDir()
	untar(t, b.archive, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != b.digest || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != b.ref {
		t.Fatalf("index %+v: want one manifest, %s named %s", m.Manifests, b.digest, b.ref)
	}

	cfg, err := b.image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/usr/local/bin/hubctl" ||
		cfg.Config.Labels["org.opencontainers.image.version"] != o.version || cfg.Config.Labels["org.opencontainers.image.revision"] != o.revision ||
		!cfg.Created.Time.Equal(o.created) {
		t.Fatalf("config %+v", cfg)
	}

	// The binary in the layer says its build.
	layers, err := b.image.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	bin := filepath.Join(t.TempDir(), "hubctl")
	seen := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
		if h.Name == "usr/local/bin/hubctl" {
			f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	for name, mode := range map[string]int64{"usr/local/bin/hubctl": 0o755, "etc/passwd": 0o644, "tmp/": 0o1777} {
		if h := seen[name]; h == nil || h.Mode != mode || !h.ModTime.Equal(o.created) {
			t.Errorf("layer entry %s: %+v, want mode %o dated %s", name, h, mode, o.created)
		}
	}
	out, err := exec.Command(bin, "version", "--client", "-o", "json").Output()
	if err != nil {
		t.Fatalf("hubctl from the image: %v", err)
	}
	var v struct {
		Client struct {
			Version, Revision string
		} `json:"client"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Client.Version != o.version || v.Client.Revision != o.revision {
		t.Fatalf("hubctl version: %s (%v), want %s at %s", out, err, o.version, o.revision)
	}
}

// TestOptionErrors: every missing or bad flag is named, and nothing is built.
func TestOptionErrors(t *testing.T) {
	err := options{platform: "linux", only: []string{"gateway"}}.validate()
	for _, want := range []string{"--version is required", "--revision is required", `--platform "linux": want os/arch`, `--only "gateway": no such image`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to say %q", err, want)
		}
	}
}

// goarch is this machine's architecture, so that the test can run what it built.
func goarch(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fileDigest is the sha256 of a file, hex.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
