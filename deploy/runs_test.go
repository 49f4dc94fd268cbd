package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// binaries is the directory of the spoke, hub and hubctl binaries: SPILLWAY_BIN_DIR (make test
// builds them there), else a build of the working tree.
func binaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SPILLWAY_BIN_DIR"); d != "" {
		return d
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-C", "..", "-o", dir+string(filepath.Separator), "./spoke/cmd/spoke", "./hub/cmd/hub", "./hub/cmd/hubctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	return dir
}

// podEnv is what the kubelet resolves a container's environment and volumes from.
type podEnv struct {
	namespace  string
	configMaps []object                     // the rendering's ConfigMaps, by their generated names
	secrets    map[string]map[string][]byte // Secret name → key → value, as the operator created them
	claims     map[string]string            // PersistentVolumeClaim name → its directory, kept across runs
}

// container is a Deployment's container as the kubelet would start it, outside a Pod: every
// volume a directory of the test's, its environment resolved, its args expanded with it, and
// every path in its args and environment moved to the directory of the volume it is on.
type container struct {
	args   []string
	env    []string          // NAME=value
	mounts map[string]string // mount path → directory
}

func emulate(t *testing.T, d *appsv1.Deployment, pe podEnv) container {
	t.Helper()
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	out := container{mounts: map[string]string{}}
	if pe.claims == nil {
		pe.claims = map[string]string{}
	}
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		if m.SubPath != "" {
			t.Fatalf("%s mounts %s with a subPath, which this test does not emulate", d.Name, m.Name)
		}
		var dir string
		switch {
		case v.ConfigMap != nil:
			dir = t.TempDir()
			cm := decode[corev1.ConfigMap](t, find(t, pe.configMaps, "ConfigMap", v.ConfigMap.Name))
			for k, data := range cm.Data {
				writeFile(t, filepath.Join(dir, k), []byte(data), 0o444)
			}
		case v.Secret != nil:
			data, ok := pe.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("%s mounts Secret %s, which the test did not create", d.Name, v.Secret.SecretName)
			}
			dir = t.TempDir()
			for k, b := range data {
				writeFile(t, filepath.Join(dir, k), b, os.FileMode(*v.Secret.DefaultMode))
			}
		case v.PersistentVolumeClaim != nil:
			var ok bool
			if dir, ok = pe.claims[v.PersistentVolumeClaim.ClaimName]; !ok {
				dir = t.TempDir()
				pe.claims[v.PersistentVolumeClaim.ClaimName] = dir
			}
		case v.EmptyDir != nil:
			dir = t.TempDir()
		default:
			t.Fatalf("%s: volume %s of a kind this test does not emulate", d.Name, m.Name)
		}
		out.mounts[m.MountPath] = dir
	}

	env := map[string]string{}
	for _, e := range c.Env {
		switch ref := e.ValueFrom; {
		case ref == nil:
			env[e.Name] = out.local(expand(e.Value, env))
		case ref.ConfigMapKeyRef != nil:
			cm := decode[corev1.ConfigMap](t, find(t, pe.configMaps, "ConfigMap", ref.ConfigMapKeyRef.Name))
			v, ok := cm.Data[ref.ConfigMapKeyRef.Key]
			if !ok {
				t.Fatalf("env %s: ConfigMap %s has no key %s", e.Name, cm.Name, ref.ConfigMapKeyRef.Key)
			}
			env[e.Name] = v
		case ref.SecretKeyRef != nil:
			v, ok := pe.secrets[ref.SecretKeyRef.Name][ref.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("env %s: the test did not create key %s of Secret %s", e.Name, ref.SecretKeyRef.Key, ref.SecretKeyRef.Name)
			}
			env[e.Name] = string(v)
		case ref.FieldRef != nil && ref.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = pe.namespace
		case ref.FieldRef != nil && ref.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = d.Name + "-0"
		case ref.ResourceFieldRef != nil: // GOMEMLIMIT: no limit outside a Pod
		default:
			t.Fatalf("env %s: a source this test does not emulate", e.Name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		out.env = append(out.env, name+"="+env[name])
	}
	for _, a := range c.Args {
		a = expand(a, env)
		if flag, value, ok := strings.Cut(a, "="); ok {
			a = flag + "=" + out.local(value)
		} else {
			a = out.local(a) // a flag's value given as the next argument
		}
		out.args = append(out.args, a)
	}
	return out
}

// local moves a path inside a mount to the mount's directory.
func (c container) local(p string) string {
	best := ""
	for mp := range c.mounts {
		if (p == mp || strings.HasPrefix(p, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return p
	}
	return c.mounts[best] + strings.TrimPrefix(p, best)
}

// expand replaces $(VAR) references as the kubelet does: a variable it does not know stays.
func expand(s string, env map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// envRef is a $(VAR) reference in a container's args.
var envRef = regexp.MustCompile(`\$\([A-Za-z_][A-Za-z0-9_]*\)`)

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// process is a binary the test started, stopped when the test ends.
type process struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	exited  chan error
}

func startProcess(t *testing.T, bin string, args, env []string) *process {
	t.Helper()
	p := &process{t: t, logPath: filepath.Join(t.TempDir(), filepath.Base(bin)+".log"), exited: make(chan error, 1)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the process stopped (cleanups run last first): its whole log
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(p.logPath)
			t.Logf("%s %s\n%s", bin, strings.Join(args, " "), log)
		}
	})
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// running fails the test if the process has exited.
func (p *process) running() {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		p.t.Fatalf("%s exited: %v", filepath.Base(p.logPath), err)
	default:
	}
}

// logged waits for the process's JSON log line with message msg and returns its attributes.
func (p *process) logged(msg string, within time.Duration) map[string]any {
	p.t.Helper()
	var rec map[string]any
	testkit.Eventually(p.t, within, "the log line "+msg, func() error {
		p.running()
		log, _ := os.ReadFile(p.logPath)
		for line := range bytes.Lines(log) {
			var r map[string]any
			if json.Unmarshal(line, &r) == nil && r["msg"] == msg {
				rec = r
				return nil
			}
		}
		return errors.New("not logged yet")
	})
	return rec
}

// log is everything the process logged so far.
func (p *process) log() []byte {
	b, _ := os.ReadFile(p.logPath)
	return b
}

// get answers a GET of url with the client, or an error.
func get(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// httpsClient verifies servers with the CA bundle for the name serverName (empty: accepts any
// certificate, for a self-signed one).
func httpsClient(t *testing.T, caFile, serverName string) *http.Client {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: serverName}
	if caFile == "" {
		cfg.InsecureSkipVerify = true
	} else {
		b, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			t.Fatalf("%s holds no certificate", caFile)
		}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// readyOverHTTPSOnly waits for /readyz to answer 200 over HTTPS, then checks that plaintext
// HTTP on the same port gets nothing from it.
func readyOverHTTPSOnly(t *testing.T, p *process, addr string, client *http.Client) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "/readyz over HTTPS", func() error {
		p.running()
		code, err := get(client, "https://"+addr+"/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("HTTP %d", code)
		}
		return nil
	})
	plain := &http.Client{Timeout: 5 * time.Second}
	if code, err := get(plain, "http://"+addr+"/readyz"); err == nil && code == http.StatusOK {
		t.Errorf("plaintext GET /readyz on %s: HTTP %d, want no answer", addr, code)
	}
}

// hub is the hub binary running as examples/hub's Deployment would run it.
type hub struct {
	grpc, admin, http string
	caFile            string   // the CA the hub made on its volume
	hubctlEnv         []string // the container's environment, for hubctl in it
	bins              string
	proc              *process
}

// startHub starts the hub with the Deployment's args, environment and volumes (its
// PersistentVolumeClaim a directory of the test's), on ports the system picks; it runs until
// the test ends.
func startHub(t *testing.T, bins string) *hub {
	t.Helper()
	// Its serving certificate names what the spokes of the example and of this cluster dial.
	return startHubOf(t, bins, "examples/hub", []string{"hub.spillway.example.com", "spillway-hub." + namespace + ".svc"})
}

// startHubOf starts the hub of the kustomization in dir as startHub does, with extra args
// appended, and waits until it is ready over HTTPS with a certificate for each of names.
func startHubOf(t *testing.T, bins, dir string, names []string, extra ...string) *hub {
	t.Helper()
	objs := objects(t, kustomize(t, dir))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-hub"))
	c := emulate(t, d, podEnv{namespace: namespace, configMaps: objs, claims: map[string]string{}})
	pki, ok := argValue(c.args, "--pki-dir")
	if !ok {
		t.Fatal("the hub has no --pki-dir")
	}
	// What differs outside a Pod, appended: the last value of a flag wins.
	args := append(c.args, "--grpc-address=127.0.0.1:0", "--admin-address=127.0.0.1:0", "--http-address=127.0.0.1:0")
	p := startProcess(t, filepath.Join(bins, "hub"), append(args, extra...), c.env)
	rec := p.logged("hub started", 60*time.Second)
	h := &hub{caFile: filepath.Join(pki, "ca.crt"), hubctlEnv: c.env, bins: bins, proc: p}
	h.grpc, _ = rec["grpc"].(string)
	h.admin, _ = rec["admin"].(string)
	h.http, _ = rec["http"].(string)
	for _, name := range names {
		readyOverHTTPSOnly(t, p, h.http, httpsClient(t, h.caFile, name))
	}
	return h
}

// hubctl runs hubctl as `kubectl exec deploy/spillway-hub -- hubctl` would: in the hub
// container's environment, with the credentials the hub wrote on its volume.
func (h *hub) hubctl(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(h.bins, "hubctl"), append([]string{"--hub=" + h.admin}, args...)...)
	cmd.Env = append(os.Environ(), h.hubctlEnv...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("hubctl %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("hubctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// hubctlJSON runs hubctl with -o json and decodes its answer.
func (h *hub) hubctlJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := h.hubctl(t, append(args, "-o", "json")...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("hubctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// testHubRuns: the hub's admin port answers hubctl in the hub's container, with the admin
// credentials the hub made on its volume, and it refuses a client without a certificate.
func testHubRuns(t *testing.T, h *hub) {
	var who struct{ Identity, Role string }
	h.hubctlJSON(t, &who, "whoami")
	if want := (tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: adminUser}).String(); who.Identity != want || who.Role != "admin" {
		t.Errorf("whoami: %+v, want %s as admin", who, want)
	}
	b, err := os.ReadFile(h.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	conn, err := tls.Dial("tcp", h.admin, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3 reports a refused client certificate at the first read.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("the admin port took a client without a certificate: %v", err)
	}
}

// spokeRun is what a spoke test needs of the cluster: the API server and the kubeconfig of the
// spoke's ServiceAccount.
type spokeRun struct {
	c          *apiserver.Cluster
	kubeconfig string
	bins       string
	hub        *hub
}

func newSpokeRun(t *testing.T, ctx context.Context, c *apiserver.Cluster, bins string, h *hub) *spokeRun {
	t.Helper()
	for _, args := range [][]string{
		{"apply", "--server-side", "--field-manager=spillway-test", "-f", "examples/cluster-properties.yaml"},
		{"create", "namespace", "gateway-system"},
	} {
		if _, err := c.Kubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	return &spokeRun{c: c, kubeconfig: serviceAccountKubeconfig(t, ctx, c, "spillway-spoke"), bins: bins, hub: h}
}

// serviceAccountKubeconfig writes a kubeconfig with a token of the ServiceAccount sa of the
// namespace: what the Pod's mounted token gives the binary in a cluster.
func serviceAccountKubeconfig(t *testing.T, ctx context.Context, c *apiserver.Cluster, sa string) string {
	t.Helper()
	token, err := c.Kubectl(ctx, "-n", namespace, "create", "token", sa)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %s, certificate-authority-data: %s}}]
users: [{name: %s, user: {token: %s}}]
contexts: [{name: c, context: {cluster: c, user: %[3]s}}]
current-context: c
`, c.Host, base64.StdEncoding.EncodeToString(c.CA), sa, strings.TrimSpace(string(token)))), 0o600)
	return kubeconfig
}

// start starts the spoke of the example in dir as its Deployment would run it, with the
// operator's Secrets and its ServiceAccount's token, so that only the RBAC of the base stands
// between it and the API, and the hub's address as this test reaches it.
func (r *spokeRun) start(t *testing.T, dir string, secrets map[string]map[string][]byte, claims map[string]string) (*process, container) {
	t.Helper()
	objs := objects(t, kustomize(t, dir))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
	c := emulate(t, d, podEnv{namespace: namespace, configMaps: objs, secrets: secrets, claims: claims})
	// What differs outside a Pod, appended: the last value of a flag wins. The spoke binds port 0
	// and logs the address it got: no port is picked here and lost to another process meanwhile.
	args := append(c.args, "--hub-address="+r.hub.grpc, "--http-address=127.0.0.1:0", "--epp-address=127.0.0.1:0", "--kubeconfig="+r.kubeconfig)
	return startProcess(t, filepath.Join(r.bins, "spoke"), args, c.env), c
}

// ready waits for the spoke to be ready over HTTPS (its informers synced, which an informer its
// RBAC does not allow never does) with its self-signed certificate.
func (r *spokeRun) ready(t *testing.T, p *process) {
	t.Helper()
	rec := p.logged("spoke started", 60*time.Second)
	addr, _ := rec["http"].(string)
	readyOverHTTPSOnly(t, p, addr, httpsClient(t, "", ""))
}

// session waits until the hub holds a session of the example's cluster, as hubctl shows it.
func (r *spokeRun) session(t *testing.T, p *process) {
	t.Helper()
	id := exampleClusterID(t)
	testkit.Eventually(t, 30*time.Second, "the hub holds a session of "+id, func() error {
		p.running()
		var list struct {
			Clusters []struct {
				Info  struct{ ClusterID string }
				State string
				HubID string
			}
		}
		r.hub.hubctlJSON(t, &list, "get", "clusters")
		for _, c := range list.Clusters {
			if c.Info.ClusterID == id && c.State == "CLUSTER_STATE_ALIVE" && c.HubID != "" {
				return nil
			}
		}
		return fmt.Errorf("clusters: %+v", list.Clusters)
	})
}

// notRefused: nothing the spoke tried was refused by the API server; a missing rule shows up
// in the log even where it does not stop the spoke.
func notRefused(t *testing.T, p *process) {
	t.Helper()
	if bytes.Contains(bytes.ToLower(p.log()), []byte("forbidden")) {
		t.Error("the API server refused the spoke something")
	}
}

// testSpokeRuns starts the real spoke as examples/spoke's Deployment would, with the Secret its
// cert-manager Certificate would fill (a certificate for the Certificate's URI from the hub's
// CA), against the real hub: it must become ready, export the gateway Service it is configured
// with, and hold a session on the hub authenticated by that certificate.
func testSpokeRuns(t *testing.T, r *spokeRun) {
	objs := objects(t, kustomize(t, "examples/spoke"))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
	secret := secretAt(t, d, "--credentials-dir", true)
	cert := certificates(t, objs)[secret]
	id, err := tlsconfig.ParseIdentity(cert.Spec.URIs[0])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(r.hub.caFile)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(filepath.Dir(r.hub.caFile), "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsconfig.LoadCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(id, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// What cert-manager writes into the Secret.
	secrets := map[string]map[string][]byte{secret: {"ca.crt": caPEM, "tls.crt": certPEM, "tls.key": keyPEM}}

	p, _ := r.start(t, "examples/spoke", secrets, nil)
	r.ready(t, p)
	testkit.Eventually(t, 30*time.Second, "a ServiceExport of the gateway Service", func() error {
		out, err := r.c.Kubectl(context.Background(), "-n", "gateway-system", "get", "serviceexports.multicluster.x-k8s.io", "-o", "name")
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(out)); got != "serviceexport.multicluster.x-k8s.io/inference-gateway" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	r.session(t, p)
	notRefused(t, p)
}

// testSpokeJoins follows docs/install.md's join: an admin creates a token with hubctl in the hub's
// container, the operator puts it and the CA hash into the Secret spillway-spoke-join, the spoke
// of examples/spoke-join starts with an empty volume, asks to join, is approved with hubctl,
// writes its credentials to its volume and holds a session. Restarted on the same volume with a
// token that is no longer valid, it does not need it.
func testSpokeJoins(t *testing.T, r *spokeRun) {
	id := exampleClusterID(t)
	var tok struct{ Token, CACertHash string }
	r.hub.hubctlJSON(t, &tok, "tokens", "create", "--cluster", id, "--ttl", "10m")
	secrets := map[string]map[string][]byte{"spillway-spoke-join": {"token": []byte(tok.Token), "ca-hash": []byte(tok.CACertHash)}}
	claims := map[string]string{}

	p, c := r.start(t, "examples/spoke-join", secrets, claims)
	// The token reaches the spoke as a file of the Secret: not on its command line, which every
	// user of the node can read, nor in its environment.
	for _, s := range append(slices.Clone(c.args), c.env...) {
		if strings.Contains(s, tok.Token) {
			t.Errorf("the spoke's command line or environment holds the token: %q", s)
		}
	}
	testkit.Eventually(t, 30*time.Second, "a pending join request of "+id, func() error {
		p.running()
		var list struct {
			Requests []struct{ ClusterID, State string }
		}
		r.hub.hubctlJSON(t, &list, "clusters", "requests")
		for _, req := range list.Requests {
			if req.ClusterID == id && req.State == "JOIN_STATE_PENDING" {
				return nil
			}
		}
		return fmt.Errorf("requests: %+v", list.Requests)
	})
	r.hub.hubctl(t, "clusters", "approve", id)
	r.ready(t, p)
	r.session(t, p)
	notRefused(t, p)

	creds, _ := argValue(c.args, "--credentials-dir")
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if _, err := os.Stat(filepath.Join(creds, f)); err != nil {
			t.Errorf("the join left no %s on the volume: %v", f, err)
		}
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	// The Secret's token is spent (another, well-formed, unknown one stands for it): the spoke
	// starts from the credentials on its volume.
	secrets["spillway-spoke-join"]["token"] = []byte("abcdef.0123456789abcdef")
	p, _ = r.start(t, "examples/spoke-join", secrets, claims)
	r.ready(t, p)
	r.session(t, p)
}

// stop interrupts the process and waits for it to exit.
func (p *process) stop() error {
	select {
	case err := <-p.exited:
		p.exited <- err
		return fmt.Errorf("exited before it was stopped: %w", err)
	default:
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		return err
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("still running 10s after an interrupt")
	}
}
