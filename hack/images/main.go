// Command images builds Spillway's container images without a container daemon: for each image
// (hub, with hubctl beside it; spoke; hubctl), static binaries built here with the release version
// and commit stamped in (what `version` and spillway_build_info say), one layer holding them and a
// passwd entry for the nonroot user 65532, and an OCI image written as an OCI image-layout
// archive (bin/images/<name>.oci.tar) that `docker load`, `podman load` and `crane push` take.
//
// The images are reproducible: the same commit, version, Go toolchain and platform give the same
// digest, since every timestamp is the commit's (SOURCE_DATE_EPOCH) and the archives are written
// in a fixed order. They have no base image (these machines reach no registry): the binaries are
// static and read their CAs from the files they are given, so they need no libc and no system CA
// bundle. `make images` runs it.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// image is one image: its binaries (main packages) and which one is the entrypoint.
type image struct {
	name     string
	packages []string
}

var images = []image{
	{"hub", []string{"./hub/cmd/hub", "./hub/cmd/hubctl"}},
	{"spoke", []string{"./spoke/cmd/spoke"}},
	{"hubctl", []string{"./hub/cmd/hubctl"}},
}

// options are the flags.
type options struct {
	version, revision, repo, out, platform, root string
	created                                      time.Time
	only                                         []string
}

const buildinfo = "github.com/spillway-io/spillway/pkg/buildinfo"

func main() {
	var o options
	var epoch int64
	var only string
	flag.StringVar(&o.version, "version", "", "the release version stamped into the binaries and the image (required)")
	flag.StringVar(&o.revision, "revision", "", "the commit stamped into the binaries and the image (required)")
	flag.StringVar(&o.repo, "repository", "ghcr.io/spillway-io", "the repository the images are named in")
	flag.StringVar(&o.out, "out", "bin/images", "directory of the archives")
	flag.StringVar(&o.platform, "platform", "linux/amd64", "os/arch of the images")
	flag.StringVar(&only, "only", "", "comma-separated images to build (default: hub, spoke, hubctl)")
	flag.Int64Var(&epoch, "source-date-epoch", envInt("SOURCE_DATE_EPOCH"), "the time of every file and of the image, in seconds since 1970 (the commit's; default $SOURCE_DATE_EPOCH)")
	flag.Parse()
	o.created = time.Unix(epoch, 0).UTC()
	if only != "" {
		o.only = strings.Split(only, ",")
	}
	o.root = "."
	built, err := build(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, b := range built {
		fmt.Printf("%s %s %s\n", b.ref, b.digest, b.archive)
	}
}

func envInt(name string) int64 {
	n, _ := strconv.ParseInt(os.Getenv(name), 10, 64)
	return n
}

// built is one image written.
type built struct {
	ref     string
	digest  v1.Hash
	archive string
	image   v1.Image
}

func (o options) validate() error {
	var errs []error
	if o.version == "" {
		errs = append(errs, errors.New("--version is required"))
	}
	if o.revision == "" {
		errs = append(errs, errors.New("--revision is required"))
	}
	if os, arch, ok := strings.Cut(o.platform, "/"); !ok || os == "" || arch == "" {
		errs = append(errs, fmt.Errorf("--platform %q: want os/arch", o.platform))
	}
	for _, n := range o.only {
		if !slices.ContainsFunc(images, func(i image) bool { return i.name == n }) {
			errs = append(errs, fmt.Errorf("--only %q: no such image (hub, spoke, hubctl)", n))
		}
	}
	return errors.Join(errs...)
}

// build builds the binaries and writes each image's archive.
func build(ctx context.Context, o options) ([]built, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	binDir, err := os.MkdirTemp("", "spillway-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	goos, goarch, _ := strings.Cut(o.platform, "/")
	var out []built
	for _, img := range images {
		if len(o.only) > 0 && !slices.Contains(o.only, img.name) {
			continue
		}
		files := map[string][]byte{}
		for _, pkg := range img.packages {
			bin := filepath.Base(pkg)
			path := filepath.Join(binDir, goos+"-"+goarch, bin)
			if err := goBuild(ctx, o, goos, goarch, pkg, path); err != nil {
				return nil, err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			files["usr/local/bin/"+bin] = b
		}
		i, err := o.image(img, files, goos, goarch)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.name, err)
		}
		ref := o.repo + "/" + img.name + ":" + o.version
		archive := filepath.Join(o.out, img.name+".oci.tar")
		if err := writeArchive(i, ref, archive, o.created); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.name, err)
		}
		d, err := i.Digest()
		if err != nil {
			return nil, err
		}
		out = append(out, built{ref: ref, digest: d, archive: archive, image: i})
	}
	return out, nil
}

// goBuild builds one static binary, reproducibly: no cgo, no paths of this machine, no build ID.
func goBuild(ctx context.Context, o options, goos, goarch, pkg, out string) error {
	ldflags := fmt.Sprintf("-s -w -buildid= -X %s.version=%s -X %s.revision=%s", buildinfo, o.version, buildinfo, o.revision)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = o.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// image assembles one image: a layer of the binaries and the nonroot user, and the config.
func (o options) image(img image, files map[string][]byte, goos, goarch string) (v1.Image, error) {
	files["etc/passwd"] = []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
	files["etc/group"] = []byte("root:x:0:\nnonroot:x:65532:\n")
	layerTar, err := layerOf(files, o.created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	i, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: o.created},
		CreatedBy: "hack/images: " + strings.Join(img.packages, " "), Comment: "static binaries and the nonroot user"}})
	if err != nil {
		return nil, err
	}
	cfg, err := i.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = goos, goarch, v1.Time{Time: o.created}
	cfg.Config.Entrypoint = []string{"/usr/local/bin/" + filepath.Base(img.packages[0])}
	cfg.Config.User = "65532:65532"
	cfg.Config.WorkingDir = "/home/nonroot"
	cfg.Config.Env = []string{"PATH=/usr/local/bin"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    "spillway-" + img.name,
		"org.opencontainers.image.version":  o.version,
		"org.opencontainers.image.revision": o.revision,
		"org.opencontainers.image.source":   "https://github.com/spillway-io/spillway",
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.created":  o.created.Format(time.RFC3339),
	}
	return mutate.ConfigFile(i, cfg)
}

// layerOf writes files (and their directories) as a tar in a fixed order, every entry owned by
// root and dated t; binaries are executable.
func layerOf(files map[string][]byte, t time.Time) ([]byte, error) {
	names := make([]string, 0, len(files))
	dirs := map[string]bool{"tmp": true, "home": true, "home/nonroot": true}
	for n := range files {
		names = append(names, n)
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var entries []string
	for d := range dirs {
		entries = append(entries, d+"/")
	}
	entries = append(entries, names...)
	slices.Sort(entries)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e, ModTime: t, Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		switch {
		case e == "tmp/":
			h.Typeflag, h.Mode = tar.TypeDir, 0o1777
		case e == "home/nonroot/":
			h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname = tar.TypeDir, 0o700, 65532, 65532, "nonroot", "nonroot"
		case strings.HasSuffix(e, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(files[e]))
			if strings.HasPrefix(e, "usr/local/bin/") {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(files[e]); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeArchive writes the image as an OCI image layout, named ref, and tars the layout into
// archive in a fixed order with every entry dated t.
func writeArchive(img v1.Image, ref, archive string, t time.Time) error {
	dir, err := os.MkdirTemp("", "spillway-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return err
	}
	var names []string
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			rel += "/"
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	f, err := os.Create(archive + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: t, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		var b []byte
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else if b, err = os.ReadFile(filepath.Join(dir, n)); err != nil {
			return err
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(archive+".tmp", archive)
}
