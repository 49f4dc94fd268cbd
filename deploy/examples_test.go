package deploy

import (
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// The defaults of the hub's and the spoke's --trust-domain and of the hub's --admin-users, which
// the examples' certificates must name (docs/security.md).
const (
	trustDomain = "spillway.local"
	adminUser   = "admin"
)

// TestExamples: the example overlays point the Deployments at the operator's images, the hub's
// load balancer exposes the spokes' port and nothing else, and the name the example spokes dial
// is in the hub's serving certificate, whichever way it is made.
func TestExamples(t *testing.T) {
	hub := objects(t, kustomize(t, "examples/hub"))
	hubCM := objects(t, kustomize(t, "examples/hub-cert-manager"))
	for _, tc := range []struct {
		dir         string
		objs        []object
		name, image string
	}{
		{"examples/hub", hub, "spillway-hub", "registry.example.com/spillway/hub:v0.1.0"},
		{"examples/hub-cert-manager", hubCM, "spillway-hub", "registry.example.com/spillway/hub:v0.1.0"},
		{"examples/spoke", objects(t, kustomize(t, "examples/spoke")), "spillway-spoke", "registry.example.com/spillway/spoke:v0.1.0"},
		{"examples/spoke-join", objects(t, kustomize(t, "examples/spoke-join")), "spillway-spoke", "registry.example.com/spillway/spoke:v0.1.0"},
		{"examples/spoke-pools", objects(t, kustomize(t, "examples/spoke-pools")), "spillway-spoke", "registry.example.com/spillway/spoke:v0.1.0"},
	} {
		d := decode[appsv1.Deployment](t, find(t, tc.objs, "Deployment", tc.name))
		if got := d.Spec.Template.Spec.Containers[0].Image; got != tc.image {
			t.Errorf("%s: %s image %s, want %s", tc.dir, tc.name, got, tc.image)
		}
		for _, o := range tc.objs {
			if o.Metadata.Namespace == "" && o.Kind != "Namespace" && o.Kind != "CustomResourceDefinition" && !strings.HasPrefix(o.Kind, "Cluster") {
				t.Errorf("%s: %s %s has no namespace: it would land in kubectl's current one", tc.dir, o.Kind, o.Metadata.Name)
			}
		}
	}
	for dir, objs := range map[string][]object{"examples/hub": hub, "examples/hub-cert-manager": hubCM} {
		svc := decode[corev1.Service](t, find(t, objs, "Service", "spillway-hub-spokes"))
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != hubSpokesPort {
			t.Errorf("%s: Service %s: %s with ports %+v, want a LoadBalancer of port %d alone", dir, svc.Name, svc.Spec.Type, svc.Spec.Ports, hubSpokesPort)
		}
	}

	// The hub issues its own serving certificate for its --tls-san names.
	host := exampleHubHost(t)
	d := decode[appsv1.Deployment](t, find(t, hub, "Deployment", "spillway-hub"))
	var sans []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--tls-san="); ok {
			sans = append(sans, strings.Split(v, ",")...)
		}
	}
	if !slices.Contains(sans, host) {
		t.Errorf("examples/hub: --tls-san %q lacks %s, the host the example spokes dial", sans, host)
	}
}

// exampleHubHost is the host of the example spoke's hub-address setting.
func exampleHubHost(t *testing.T) string {
	t.Helper()
	settings := decode[corev1.ConfigMap](t, find(t, objects(t, kustomize(t, "examples/spoke")), "ConfigMap", "spillway-spoke-settings"))
	host, _, err := net.SplitHostPort(settings.Data["hub-address"])
	if err != nil {
		t.Fatalf("hub-address %q: %v", settings.Data["hub-address"], err)
	}
	return host
}

// certificate is the part of cert-manager's Certificate (cert-manager.io/v1) the tests read.
type certificate struct {
	Metadata struct{ Name string }
	Spec     struct {
		SecretName  string
		IsCA        bool
		DNSNames    []string
		IPAddresses []string
		URIs        []string
		Usages      []string
		IssuerRef   struct{ Name, Kind string }
		PrivateKey  struct{ RotationPolicy string }
	}
}

// issuer is the part of cert-manager's Issuer the tests read.
type issuer struct {
	Metadata struct{ Name string }
	Spec     struct {
		CA *struct{ SecretName string }
	}
}

// decodeLoose reads the fields of T that o has, ignoring the others.
func decodeLoose[T any](t *testing.T, o object) *T {
	t.Helper()
	v := new(T)
	if err := yaml.Unmarshal([]byte(o.yaml), v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
	return v
}

func certificates(t *testing.T, objs []object) map[string]*certificate {
	t.Helper()
	certs := map[string]*certificate{}
	for _, o := range objs {
		if o.Kind == "Certificate" {
			c := decodeLoose[certificate](t, o)
			certs[c.Spec.SecretName] = c
		}
	}
	return certs
}

// secretAt is the Secret mounted where flag's file (or directory) is.
func secretAt(t *testing.T, d *appsv1.Deployment, flag string, dir bool) string {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	value, ok := argValue(c.Args, flag)
	if !ok {
		t.Fatalf("%s has no %s", d.Name, flag)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	if _, v := mountOf(c, volumes, value, dir); v != nil && v.Secret != nil {
		return v.Secret.SecretName
	}
	t.Fatalf("%s %s=%s is not in a Secret", d.Name, flag, value)
	return ""
}

// TestSpokeCertificate: the example spoke's cert-manager Certificate fills the Secret its
// --credentials-dir mounts, with a client certificate naming the cluster the example's
// ClusterProperty names, in the default trust domain; its key is new at each renewal.
func TestSpokeCertificate(t *testing.T) {
	objs := objects(t, kustomize(t, "examples/spoke"))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
	secret := secretAt(t, d, "--credentials-dir", true)
	c, ok := certificates(t, objs)[secret]
	if !ok {
		t.Fatalf("no Certificate fills Secret %s, which --credentials-dir mounts", secret)
	}
	if len(c.Spec.URIs) != 1 {
		t.Fatalf("Certificate %s URIs %q, want the cluster's identity alone", c.Metadata.Name, c.Spec.URIs)
	}
	id, err := tlsconfig.ParseIdentity(c.Spec.URIs[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := (tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: exampleClusterID(t)}); id != want {
		t.Errorf("Certificate %s names %s, want %s: the ClusterProperty's cluster ID in the default trust domain", c.Metadata.Name, id, want)
	}
	if !slices.Contains(c.Spec.Usages, "client auth") || slices.Contains(c.Spec.Usages, "server auth") || len(c.Spec.DNSNames) > 0 || len(c.Spec.IPAddresses) > 0 {
		t.Errorf("Certificate %s usages %q, names %q %q: want a client certificate with the identity alone", c.Metadata.Name, c.Spec.Usages, c.Spec.DNSNames, c.Spec.IPAddresses)
	}
	if c.Spec.PrivateKey.RotationPolicy != "Always" {
		t.Errorf("Certificate %s keeps its key across renewals (rotationPolicy %q)", c.Metadata.Name, c.Spec.PrivateKey.RotationPolicy)
	}
}

// exampleClusterID is the cluster ID of deploy/examples/cluster-properties.yaml.
func exampleClusterID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("examples/cluster-properties.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var p struct {
			Metadata struct{ Name string }
			Spec     struct{ Value string }
		}
		if err := yaml.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatal(err)
		}
		if p.Metadata.Name == "cluster.clusterset.k8s.io" {
			return p.Spec.Value
		}
	}
	t.Fatal("no ClusterProperty cluster.clusterset.k8s.io in examples/cluster-properties.yaml")
	return ""
}

// TestHubCertManager: in the cert-manager example one CA does everything: the Secret the hub
// signs join requests with is the CA Certificate's, the Issuer of the hub's serving certificate
// and of hubctl's is that CA, so the ca.crt the hub verifies clients with is the CA that signs
// joined clusters, and joined clusters (which trust the signing CA) verify the hub. The serving
// certificate names every address the hub is dialled at, and hubctl's names an admin.
func TestHubCertManager(t *testing.T) {
	objs := objects(t, kustomize(t, "examples/hub-cert-manager"))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-hub"))
	certs := certificates(t, objs)
	issuers := map[string]*issuer{}
	for _, o := range objs {
		if o.Kind == "Issuer" {
			i := decodeLoose[issuer](t, o)
			issuers[i.Metadata.Name] = i
		}
	}

	caSecret := secretAt(t, d, "--ca-cert-file", false)
	if key := secretAt(t, d, "--ca-key-file", false); key != caSecret {
		t.Errorf("--ca-cert-file is in Secret %s, --ca-key-file in %s", caSecret, key)
	}
	if ca, ok := certs[caSecret]; !ok || !ca.Spec.IsCA {
		t.Errorf("Secret %s, the hub's signing CA, is not filled by a CA Certificate", caSecret)
	}
	serving := secretAt(t, d, "--tls-cert-file", false)
	for _, flag := range []string{"--tls-key-file", "--client-ca-file"} {
		if s := secretAt(t, d, flag, false); s != serving {
			t.Errorf("%s is in Secret %s, --tls-cert-file in %s", flag, s, serving)
		}
	}
	hubCert, ok := certs[serving]
	if !ok {
		t.Fatalf("no Certificate fills Secret %s, the hub's serving certificate", serving)
	}
	admin, ok := certs["spillway-hubctl-admin"]
	if !ok {
		t.Fatal("no Certificate fills Secret spillway-hubctl-admin")
	}
	for _, c := range []*certificate{hubCert, admin} {
		i, ok := issuers[c.Spec.IssuerRef.Name]
		if c.Spec.IssuerRef.Kind != "Issuer" || !ok || i.Spec.CA == nil || i.Spec.CA.SecretName != caSecret {
			t.Errorf("Certificate %s is issued by %s %s, want the CA Issuer of Secret %s", c.Metadata.Name, c.Spec.IssuerRef.Kind, c.Spec.IssuerRef.Name, caSecret)
		}
	}

	spokeHost := exampleHubHost(t)
	baseHost, _, _ := net.SplitHostPort(decode[corev1.ConfigMap](t, find(t, objects(t, kustomize(t, "spoke")), "ConfigMap", "spillway-spoke-settings")).Data["hub-address"])
	sm := decode[serviceMonitor](t, find(t, objs, "ServiceMonitor", "spillway-hub"))
	for _, name := range []string{spokeHost, baseHost, "spillway-hub-admin.spillway-system.svc", sm.Spec.Endpoints[0].TLSConfig.ServerName} {
		if !slices.Contains(hubCert.Spec.DNSNames, name) {
			t.Errorf("the hub's certificate names %q, not %s", hubCert.Spec.DNSNames, name)
		}
	}
	// hubctl in the hub's container dials the admin port on loopback.
	if !slices.Contains(hubCert.Spec.IPAddresses, "127.0.0.1") || !slices.Contains(hubCert.Spec.Usages, "server auth") {
		t.Errorf("the hub's certificate: IPs %q, usages %q; want 127.0.0.1 and server auth", hubCert.Spec.IPAddresses, hubCert.Spec.Usages)
	}
	want := tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: adminUser}.String()
	if !slices.Equal(admin.Spec.URIs, []string{want}) || !slices.Contains(admin.Spec.Usages, "client auth") {
		t.Errorf("hubctl's certificate: URIs %q, usages %q; want %s for client auth", admin.Spec.URIs, admin.Spec.Usages, want)
	}
}

// TestSpokeJoin: the join example keeps its credentials on a volume that outlives the Pod (so the
// token is needed once), never mounted by two Pods at once, reads the token from the file token
// of the Secret spillway-spoke-join, mounted (never from an environment variable or the command
// line), and takes the CA hash from the same Secret.
func TestSpokeJoin(t *testing.T) {
	objs := objects(t, kustomize(t, "examples/spoke-join"))
	d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-spoke"))
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %s: a second Pod would wait for the old one's volume, or write the same credentials", d.Spec.Strategy.Type)
	}
	c := d.Spec.Template.Spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	creds, _ := argValue(c.Args, "--credentials-dir")
	m, v := mountOf(c, volumes, creds, true)
	switch {
	case v == nil || v.PersistentVolumeClaim == nil:
		t.Errorf("--credentials-dir=%s is not on a PersistentVolumeClaim", creds)
	case m.ReadOnly:
		t.Errorf("--credentials-dir=%s is read-only: the spoke writes its certificate there", creds)
	default:
		find(t, objs, "PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName)
	}
	tokenFile, ok := argValue(c.Args, "--join-token-file")
	m, v = mountOf(c, volumes, tokenFile, false)
	switch {
	case !ok:
		t.Error("no --join-token-file")
	case v == nil || v.Secret == nil || v.Secret.SecretName != "spillway-spoke-join":
		t.Errorf("--join-token-file=%s is not in a mount of the Secret spillway-spoke-join", tokenFile)
	case tokenFile != path.Join(m.MountPath, secretFile(v.Secret, "token")):
		t.Errorf("--join-token-file=%s is not the file of the Secret's key token (%s)", tokenFile, secretFile(v.Secret, "token"))
	}
	for _, e := range c.Env {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Key == "token" {
			t.Errorf("env %s holds the Secret's token: a process's environment reaches its children and debugging tools; the spoke reads the token from --join-token-file", e.Name)
		}
	}
	for _, flag := range secretValueFlags {
		if _, ok := argValue(c.Args, flag); !ok {
			t.Errorf("no %s", flag)
		}
	}
	// checkSecretsOf (TestKeysOnlyInSecrets) asserts the values come from a Secret, mounted
	// read-only and readable by the Pod's group alone, and that --join-token is not given.
}

// secretFile is the name of the file that holds key in a volume of Secret s: the key itself,
// unless the volume lists the keys it projects ("" when key is not among them).
func secretFile(s *corev1.SecretVolumeSource, key string) string {
	if len(s.Items) == 0 {
		return key
	}
	for _, it := range s.Items {
		if it.Key == key {
			return it.Path
		}
	}
	return ""
}
