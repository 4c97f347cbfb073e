package enricher

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
)

// apiServer speaks the list and watch protocol of the Kubernetes API for
// metadata-only clients: lists as PartialObjectMetadataList, watches as a
// stream of {"type":…,"object":…} lines. The first pod watch delivers one
// event and breaks; the second must resume from that event's
// resourceVersion, and delivers an addition and a deletion.
type apiServer struct {
	t       *testing.T
	mu      sync.Mutex
	lists   map[string]int // list requests per path
	watches []string       // resourceVersion of each pod watch
}

func partial(o *metav1.PartialObjectMetadata, rv string) map[string]any {
	o.ResourceVersion = rv
	return map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.ObjectMeta}
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("sendInitialEvents") == "true" {
		// An API server without streaming lists: the reflector falls back
		// to list and watch.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400,"message":"sendInitialEvents is not supported"}`)
		return
	}
	var items []map[string]any
	switch r.URL.Path {
	case "/api/v1/nodes":
		items = append(items, partial(node("node-a", map[string]string{"topology.kubernetes.io/zone": "z1"}), "5"))
	case "/api/v1/pods":
		items = append(items,
			partial(pod("shop", "listed-1", nil, "StatefulSet", "listed"), "6"),
			partial(pod("shop", "listed-2", nil, "StatefulSet", "listed"), "7"))
	case "/apis/apps/v1/replicasets", "/apis/batch/v1/jobs":
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		s.mu.Lock()
		s.lists[r.URL.Path]++
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
			"metadata": map[string]any{"resourceVersion": "10"}, "items": items,
		})
		return
	}
	send := func(typ string, obj map[string]any) {
		_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "object": obj})
		w.(http.Flusher).Flush()
	}
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	if r.URL.Path == "/api/v1/pods" {
		s.mu.Lock()
		s.watches = append(s.watches, q.Get("resourceVersion"))
		n := len(s.watches)
		s.mu.Unlock()
		switch n {
		case 1:
			send("ADDED", partial(pod("shop", "late-1", nil, "DaemonSet", "agent"), "11"))
			return // the watch breaks
		case 2:
			send("ADDED", partial(pod("shop", "late-2", nil, "DaemonSet", "agent"), "12"))
			send("DELETED", partial(pod("shop", "listed-2", nil, "StatefulSet", "listed"), "13"))
		}
	}
	<-r.Context().Done()
}

func TestInformersListWatchAndResumeABrokenWatch(t *testing.T) {
	api := &apiServer{t: t, lists: map[string]int{}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close) // after the informers stop (cleanups run last first)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q}}]
users: [{name: test, user: {}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := restConfig(ClusterConfig{Name: "k1", Kubeconfig: kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	client, err := metadata.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, func() float64 { return 0 })
	c, err := newClusterMeta("k1", client, 0, nodeKeys, podKeys, m)
	if err != nil {
		t.Fatal(err)
	}
	runMeta(t, context.Background(), c)

	has := func(key string) bool { return get(c.pods, key) != nil }
	if n := get(c.nodes, "node-a"); n == nil || n.Labels["topology.kubernetes.io/zone"] != "z1" {
		t.Fatalf("listed node: %+v", n)
	}
	eventually(t, "pod from the first watch", func() bool { return has("shop/late-1") })
	eventually(t, "pod from the resumed watch", func() bool { return has("shop/late-2") })
	eventually(t, "pod deleted in the resumed watch", func() bool { return !has("shop/listed-2") })
	if !has("shop/listed-1") {
		t.Error("listed pod lost")
	}
	if got := gaugeValue(t, m.cacheObjects.WithLabelValues("k1", "pods")); got != 3 {
		t.Errorf("weir_enricher_cache_objects{resource=pods} = %v, want 3", got)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.watches) < 2 || api.watches[1] != "11" {
		t.Errorf("pod watches started at resourceVersion %q; the second must resume at 11, where the first broke", api.watches)
	}
	if api.lists["/api/v1/pods"] != 1 {
		t.Errorf("pods listed %d times; a broken watch must resume, not list again", api.lists["/api/v1/pods"])
	}
}
