package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	apixv1alpha1 "sigs.k8s.io/gateway-api-inference-extension/apix/v1alpha1"
	gieclient "sigs.k8s.io/gateway-api-inference-extension/client-go/clientset/versioned"

	"github.com/spillway-io/spillway/e2e/apiserver"
)

// startKube starts a real kube-apiserver (with its etcd) per region, on loopback of the test's
// own namespace, with the CRDs a spoke needs, seeded as make demo-k8s seeds them: the region's
// ClusterProperty identity, the exported InferencePool default/chat with a ready Pod per model
// server and the three objectives. Each region's namespace gets a forwarder on the API server's
// loopback address, so the spoke there dials it as if it ran beside it.
func (f *Fleet) startKube(ctx context.Context) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	bins, err := apiserver.FindBins(root)
	if err != nil {
		return err
	}
	var names []string
	for _, r := range f.Regions {
		names = append(names, r.Cluster)
	}
	// A second try when the first fails: on a loaded machine kubectl's wait for the CRDs can
	// read a CRD before its first status.
	var clusters map[string]*apiserver.Cluster
	for attempt := 1; ; attempt++ {
		clusters, err = apiserver.StartWithCRDs(ctx, bins, filepath.Join(f.WorkDir, fmt.Sprintf("kube-%d", attempt)), root, names...)
		if err == nil || attempt == 2 || ctx.Err() != nil {
			break
		}
		for _, c := range clusters {
			c.Stop()
		}
	}
	f.kube = clusters
	if err != nil {
		return err
	}
	for _, r := range f.Regions {
		c := clusters[r.Cluster]
		seed := apiserver.Seed{ClusterID: r.Cluster, ClusterSet: "faults", Namespace: "default", Pool: "chat", TargetPort: 8000,
			EndpointIPs: []string{"127.0.0.1", "127.0.0.2"}, Objectives: map[string]int{"critical": 100, "standard": 0, "batch": -1}}
		if err := c.SeedCluster(ctx, seed); err != nil {
			return fmt.Errorf("%s: %w", r.Cluster, err)
		}
		// The namespace of the spoke's leader election Lease.
		if _, err := c.KubectlStdin(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: spillway-system}\n", "apply", "-f", "-"); err != nil {
			return err
		}
		u, err := url.Parse(c.Host)
		if err != nil {
			return err
		}
		fw, err := f.forward(r.Node, u.Host, u.Host)
		if err != nil {
			return err
		}
		f.forwarders = append(f.forwarders, fw)
	}
	return nil
}

// forwarder accepts connections on an address inside a namespace and relays each to an address
// of the test's own namespace (a loopback one).
type forwarder struct {
	l  net.Listener
	wg sync.WaitGroup
}

func (f *Fleet) forward(node, listen, target string) (*forwarder, error) {
	l, err := inNS(f.Net.NS(node), func() (net.Listener, error) { return net.Listen("tcp", listen) })
	if err != nil {
		return nil, err
	}
	fw := &forwarder{l: l}
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			fw.wg.Add(1)
			go func() {
				defer fw.wg.Done()
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done
				in.Close()
				out.Close()
				<-done
			}()
		}
	}()
	return fw, nil
}

func (fw *forwarder) Close() {
	fw.l.Close()
	fw.wg.Wait()
}

// ImportEvent is a change to an InferencePoolImport of a member cluster that took something away:
// the object deleted, or clusters gone from the exporting clusters of Spillway's entry.
type ImportEvent struct {
	At      time.Time
	Cluster string // the member cluster holding the import
	Pool    string
	Deleted bool
	Lost    []string // exporting clusters no longer listed
}

func (e ImportEvent) String() string {
	if e.Deleted {
		return fmt.Sprintf("%s: import %s deleted at %s", e.Cluster, e.Pool, e.At.Format("15:04:05.000"))
	}
	return fmt.Sprintf("%s: import %s lost %v at %s", e.Cluster, e.Pool, e.Lost, e.At.Format("15:04:05.000"))
}

// WatchImports watches every member cluster's InferencePoolImports in namespace default until
// stop, which returns what was taken away meanwhile.
func (f *Fleet) WatchImports(ctx context.Context) (stop func() []ImportEvent, err error) {
	if f.kube == nil {
		return nil, errors.New("faults: the fleet runs without Kubernetes")
	}
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var events []ImportEvent
	var wg sync.WaitGroup
	for _, r := range f.Regions {
		cs, err := gieclient.NewForConfig(f.kube[r.Cluster].RESTConfig())
		if err != nil {
			cancel()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			known := map[string][]string{}
			record := func(e ImportEvent) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}
			for ctx.Err() == nil {
				list, err := cs.XInferenceV1alpha1().InferencePoolImports("default").List(ctx, metav1.ListOptions{})
				if err != nil {
					sleepCtx(ctx, 200*time.Millisecond)
					continue
				}
				seen := map[string]bool{}
				for i := range list.Items {
					seen[list.Items[i].Name] = true
					f.importChanged(r.Cluster, known, &list.Items[i], record)
				}
				for name := range known {
					if !seen[name] {
						record(ImportEvent{At: time.Now(), Cluster: r.Cluster, Pool: name, Deleted: true})
						delete(known, name)
					}
				}
				w, err := cs.XInferenceV1alpha1().InferencePoolImports("default").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
				if err != nil {
					continue
				}
				for ev := range w.ResultChan() {
					obj, ok := ev.Object.(*apixv1alpha1.InferencePoolImport)
					if !ok {
						continue
					}
					switch ev.Type {
					case watch.Deleted:
						record(ImportEvent{At: time.Now(), Cluster: r.Cluster, Pool: obj.Name, Deleted: true})
						delete(known, obj.Name)
					case watch.Added, watch.Modified:
						f.importChanged(r.Cluster, known, obj, record)
					}
				}
				w.Stop()
			}
		}()
	}
	return func() []ImportEvent {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}, nil
}

// importChanged records the exporting clusters an import's Spillway entry no longer lists.
func (f *Fleet) importChanged(cluster string, known map[string][]string, obj *apixv1alpha1.InferencePoolImport, record func(ImportEvent)) {
	var now []string
	for _, c := range obj.Status.Controllers {
		for _, e := range c.ExportingClusters {
			now = append(now, string(e.Name))
		}
	}
	if prev, ok := known[obj.Name]; ok {
		var lost []string
		for _, c := range prev {
			if !slices.Contains(now, c) {
				lost = append(lost, c)
			}
		}
		if len(lost) > 0 {
			record(ImportEvent{At: time.Now(), Cluster: cluster, Pool: obj.Name, Lost: lost})
		}
	}
	known[obj.Name] = now
}
