package deploy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// installations are every rendering an operator may apply: the bases, with every component,
// and the examples.
var installations = []string{
	"hub", "spoke", "testdata/hub-components", "testdata/spoke-components", "testdata/spoke-create-namespaces",
	"examples/hub", "examples/hub-cert-manager", "examples/spoke", "examples/spoke-join", "examples/spoke-pool-namespace",
}

// Spillway's ports (docs/security.md): what may be exposed beyond the cluster and what may not.
const (
	hubSpokesPort  = 8470
	hubMetricsPort = 8471
	hubAdminPort   = 8472
)

// secretFlags name key material or what verifies a peer: they must point into a mounted Secret
// (or, for the directories the binaries write themselves, a volume of their own), never into a
// ConfigMap or the image.
var secretFlags = map[string]struct {
	dir      bool // the flag names a directory, not a file
	writable bool // the binary writes there: a PersistentVolumeClaim is allowed
}{
	"--tls-cert-file":   {},
	"--tls-key-file":    {},
	"--client-ca-file":  {},
	"--ca-cert-file":    {},
	"--ca-key-file":     {},
	"--gossip-key-file": {},
	"--join-token-file": {}, // the bootstrap token, read only while joining
	"--epp-cert-dir":    {dir: true},
	"--credentials-dir": {dir: true, writable: true}, // the join flow writes it
	"--pki-dir":         {dir: true, writable: true}, // the hub's own CA
}

// secretValueFlags carry what an operator keeps in a Secret, not secret itself, on the command
// line: only through an environment variable that comes from a Secret.
var secretValueFlags = []string{"--hub-ca-hash"}

// commandLineSecretFlags take a secret as their value. Anything on a container's command line
// is in the Pod's spec (with $(VAR), the kubelet expands it) and in every node's process list:
// they are never given; their -file variants (secretFlags) read the value from a Secret's file.
var commandLineSecretFlags = []string{"--join-token"}

// TestKeysOnlyInSecrets: in every installation, key material and tokens reach the binaries only
// from Secrets mounted read-only as whole directories (so that rotations reach them) and
// readable by the Pod's group alone, or from the writable volume where a binary keeps what it
// made itself; never from a ConfigMap, an environment variable of a ConfigMap, a literal in the
// manifests, or a flag whose value is the secret itself (such as --join-token).
func TestKeysOnlyInSecrets(t *testing.T) {
	for _, dir := range installations {
		t.Run(dir, func(t *testing.T) {
			objs := objects(t, kustomize(t, dir))
			for _, o := range objs {
				if strings.Contains(o.yaml, "PRIVATE KEY") || strings.Contains(o.yaml, "-----BEGIN") {
					t.Errorf("%s %s holds PEM data", o.Kind, o.Metadata.Name)
				}
				if o.Kind == "Secret" {
					t.Errorf("Secret %s is in the manifests: its value would be in the operator's repository", o.Metadata.Name)
				}
				if o.Kind == "ConfigMap" {
					cm := decode[corev1.ConfigMap](t, o)
					for k := range cm.Data {
						if secretName.MatchString(k) {
							t.Errorf("ConfigMap %s has key %q: secrets belong in Secrets", cm.Name, k)
						}
					}
				}
			}
			for _, o := range objs {
				if o.Kind == "Deployment" {
					checkSecretsOf(t, decode[appsv1.Deployment](t, o))
				}
			}
		})
	}
}

// secretName matches the names of settings that would be secrets.
var secretName = regexp.MustCompile(`(?i)(^|[-_.])(key|token|secret|password|ca-hash)($|[-_.])`)

func checkSecretsOf(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("%s mounts volume %s, which the Pod does not have", d.Name, m.Name)
			continue
		}
		if v.Secret == nil {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s mounts Secret %s writable at %s", d.Name, v.Secret.SecretName, m.MountPath)
		}
		if m.SubPath != "" {
			t.Errorf("%s mounts Secret %s with subPath %s: the kubelet never updates such a file, so a rotated certificate would not reach the binary", d.Name, v.Secret.SecretName, m.SubPath)
		}
		if v.Secret.Optional != nil && *v.Secret.Optional {
			t.Errorf("%s: Secret %s is optional: a missing Secret would start the binary without its keys", d.Name, v.Secret.SecretName)
		}
		if mode := v.Secret.DefaultMode; mode == nil || *mode&0o137 != 0 {
			t.Errorf("%s: Secret %s files have mode %s, want readable by the owner and the Pod's group only (0440 or less)", d.Name, v.Secret.SecretName, octal(mode))
		}
	}
	for flag, kind := range secretFlags {
		value, ok := argValue(c.Args, flag)
		if !ok {
			continue
		}
		m, v := mountOf(c, volumes, value, kind.dir)
		switch {
		case v == nil:
			t.Errorf("%s %s=%s is not on a mounted volume", d.Name, flag, value)
		case v.Secret != nil:
		case v.PersistentVolumeClaim != nil && kind.writable:
			if m.ReadOnly {
				t.Errorf("%s %s=%s: the binary writes there, but volume %s is mounted read-only", d.Name, flag, value, v.Name)
			}
		default:
			t.Errorf("%s %s=%s is on volume %s, which is not a Secret", d.Name, flag, value, v.Name)
		}
	}
	secretEnv := map[string]bool{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			secretEnv[e.Name] = true
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && secretName.MatchString(e.ValueFrom.ConfigMapKeyRef.Key):
			t.Errorf("%s: env %s comes from ConfigMap key %s", d.Name, e.Name, e.ValueFrom.ConfigMapKeyRef.Key)
		}
	}
	for _, flag := range commandLineSecretFlags {
		if a, ok := givenFlag(c.Args, flag); ok {
			t.Errorf("%s is given %s: its value would be in the process list; use %s-file, a file of a mounted Secret", d.Name, a, flag)
		}
	}
	for _, flag := range secretValueFlags {
		value, ok := argValue(c.Args, flag)
		if !ok {
			continue
		}
		if name, ok := strings.CutPrefix(value, "$("); !ok || !secretEnv[strings.TrimSuffix(name, ")")] {
			t.Errorf("%s %s=%s: want $(VAR) of an env var from a Secret", d.Name, flag, value)
		}
	}
}

// argValue is the value of the last --flag=value in args: the one the binary uses.
func argValue(args []string, flag string) (string, bool) {
	var value string
	var found bool
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			value, found = v, true
		}
	}
	return value, found
}

// givenFlag is the first argument of args that gives flag, in any form the binaries' flag
// parsing takes: -flag or --flag, with =value or its value in the next argument.
func givenFlag(args []string, flag string) (string, bool) {
	name := strings.TrimLeft(flag, "-")
	for _, a := range args {
		if a == "--" {
			break
		}
		rest, ok := strings.CutPrefix(a, "--")
		if !ok {
			rest, ok = strings.CutPrefix(a, "-")
		}
		if ok && (rest == name || strings.HasPrefix(rest, name+"=")) {
			return a, true
		}
	}
	return "", false
}

// mountOf is the mount holding p (a file inside it, or, for a directory, the mount itself) and
// its volume.
func mountOf(c corev1.Container, volumes map[string]corev1.Volume, p string, dir bool) (*corev1.VolumeMount, *corev1.Volume) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(p) || dir && (m.MountPath == p || strings.HasPrefix(p, m.MountPath+"/")) {
			if v, ok := volumes[m.Name]; ok {
				return &m, &v
			}
		}
	}
	return nil, nil
}

func octal(mode *int32) string {
	if mode == nil {
		return "unset (0644)"
	}
	return fmt.Sprintf("%#o", *mode)
}

// TestHTTPSEverywhere: every probe and every scrape of the Deployments' HTTP ports is HTTPS,
// since the binaries serve nothing in plaintext without --insecure-http; a scrape that does not
// verify the certificate says so in its comment and is asserted to be the base's choice.
func TestHTTPSEverywhere(t *testing.T) {
	for _, dir := range installations {
		t.Run(dir, func(t *testing.T) {
			objs := objects(t, kustomize(t, dir))
			for _, o := range objs {
				switch o.Kind {
				case "Deployment":
					d := decode[appsv1.Deployment](t, o)
					c := d.Spec.Template.Spec.Containers[0]
					for _, a := range c.Args {
						if strings.HasPrefix(a, "--insecure") || a == "--epp-secure-serving=false" || a == "--gossip-insecure" || strings.HasPrefix(a, "--gossip-insecure=") {
							t.Errorf("%s runs with %s", d.Name, a)
						}
					}
					for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
						if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
							t.Errorf("%s probes %s with scheme %q, want HTTPS", d.Name, p.HTTPGet.Path, p.HTTPGet.Scheme)
						}
					}
				case "ServiceMonitor":
					checkServiceMonitor(t, objs, decode[serviceMonitor](t, o))
				}
			}
		})
	}
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor the tests read.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Scheme    string `json:"scheme"`
			TLSConfig *struct {
				InsecureSkipVerify bool `json:"insecureSkipVerify"`
				ServerName         string
				CA                 struct {
					Secret *struct{ Name, Key string } `json:"secret"`
				} `json:"ca"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// checkServiceMonitor: scrapes are HTTPS; one that verifies does so with the CA of the Secret
// whose certificate the scraped binary serves.
func checkServiceMonitor(t *testing.T, objs []object, sm *serviceMonitor) {
	t.Helper()
	for _, e := range sm.Spec.Endpoints {
		if e.Scheme != "https" || e.TLSConfig == nil {
			t.Errorf("ServiceMonitor %s scrapes port %s with scheme %q and TLS %+v, want https", sm.Metadata.Name, e.Port, e.Scheme, e.TLSConfig)
			continue
		}
		if e.TLSConfig.InsecureSkipVerify {
			continue
		}
		ref := e.TLSConfig.CA.Secret
		if ref == nil || ref.Key != "ca.crt" || e.TLSConfig.ServerName == "" {
			t.Errorf("ServiceMonitor %s verifies with %+v for %q, want ca.crt of a Secret and a server name", sm.Metadata.Name, ref, e.TLSConfig.ServerName)
			continue
		}
		var mounted bool
		for _, o := range objs {
			if o.Kind != "Deployment" {
				continue
			}
			d := decode[appsv1.Deployment](t, o)
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == ref.Name && labelsMatch(sm.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("ServiceMonitor %s verifies with Secret %s, which the Deployment it scrapes does not mount", sm.Metadata.Name, ref.Name)
		}
	}
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// TestAdminPortStaysInside: hubctl's admin port (and the metrics port) are never on a Service
// that also serves the spokes' port, nor on one reachable from outside the cluster; the admin
// port has its own ClusterIP Service.
func TestAdminPortStaysInside(t *testing.T) {
	for _, dir := range installations {
		if !strings.Contains(dir, "hub") {
			continue
		}
		t.Run(dir, func(t *testing.T) {
			var admin []string
			objs := objects(t, kustomize(t, dir))
			hub := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-hub")).Spec.Template.Spec.Containers[0]
			for _, o := range objs {
				if o.Kind != "Service" {
					continue
				}
				svc := decode[corev1.Service](t, o)
				var ports []int32
				for _, p := range svc.Spec.Ports {
					ports = append(ports, p.Port, p.TargetPort.IntVal)
					if p.TargetPort.StrVal != "" {
						ports = append(ports, containerPort(hub, p.TargetPort.StrVal))
					}
				}
				external := svc.Spec.Type == corev1.ServiceTypeLoadBalancer || svc.Spec.Type == corev1.ServiceTypeNodePort || len(svc.Spec.ExternalIPs) > 0
				switch {
				case slices.Contains(ports, hubAdminPort) && slices.Contains(ports, hubSpokesPort):
					t.Errorf("Service %s serves the admin port beside the spokes' port", svc.Name)
				case external && (slices.Contains(ports, hubAdminPort) || slices.Contains(ports, hubMetricsPort)):
					t.Errorf("Service %s (%s) exposes ports %v outside the cluster: only the spokes' port %d may be", svc.Name, svc.Spec.Type, ports, hubSpokesPort)
				}
				if slices.Contains(ports, hubAdminPort) {
					admin = append(admin, svc.Name)
				}
			}
			if !slices.Equal(admin, []string{"spillway-hub-admin"}) {
				t.Errorf("Services with the admin port: %q, want spillway-hub-admin alone", admin)
			}
		})
	}
}

// TestGivenFlag: every form that gives a flag its value is found, and no other flag whose name
// starts the same.
func TestGivenFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--region=x", "--join-token=abcdef.0123456789abcdef"}, "--join-token=abcdef.0123456789abcdef"},
		{[]string{"--join-token", "abcdef.0123456789abcdef"}, "--join-token"},
		{[]string{"-join-token=$(TOKEN)"}, "-join-token=$(TOKEN)"},
		{[]string{"--join-token="}, "--join-token="},
		{[]string{"--join-token-file=/etc/spillway/join/token", "--join-tokens=x", "join-token=x"}, ""},
		{[]string{"--", "--join-token=x"}, ""},
		{nil, ""},
	} {
		got, ok := givenFlag(tc.args, "--join-token")
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("givenFlag(%q) = %q, %v; want %q", tc.args, got, ok, tc.want)
		}
	}
}
