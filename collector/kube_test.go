package collector

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// nodeAPI serves Node objects over HTTP as the API server does: get, list
// and watch, the whole objects or, when the client asks for them
// (as=PartialObjectMetadata in Accept), their metadata only; a watch that
// asks for initial events gets them, then the bookmark that ends a watch
// list. Nodes are added and deleted while it serves.
type nodeAPI struct {
	mu       sync.Mutex
	nodes    map[string]*corev1.Node
	version  int
	watchers []chan watchEvent
}

type watchEvent struct {
	typ  string
	node *corev1.Node
}

func node(name string, kubeletPort int32) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = kubeletPort
	return n
}

// newNodeClient starts a nodeAPI with nodes and returns the client of
// NewNodeClient reading it.
func newNodeClient(t *testing.T, nodes ...*corev1.Node) (NodeClient, *nodeAPI) {
	t.Helper()
	api := &nodeAPI{nodes: map[string]*corev1.Node{}}
	for _, n := range nodes {
		api.add(n)
	}
	srv := httptest.NewServer(api.handler())
	t.Cleanup(srv.Close)
	c, err := NewNodeClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c, api
}

func (a *nodeAPI) add(n *corev1.Node) { a.change("ADDED", n) }

func (a *nodeAPI) delete(name string) {
	a.mu.Lock()
	n := a.nodes[name]
	a.mu.Unlock()
	a.change("DELETED", n)
}

func (a *nodeAPI) change(typ string, n *corev1.Node) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version++
	n = n.DeepCopy()
	n.APIVersion, n.Kind, n.ResourceVersion = "v1", "Node", strconv.Itoa(a.version)
	if typ == "DELETED" {
		delete(a.nodes, n.Name)
	} else {
		a.nodes[n.Name] = n
	}
	for _, w := range a.watchers {
		w <- watchEvent{typ, n}
	}
}

// object is n as the client asked for it.
func object(r *http.Request, n *corev1.Node) any {
	if !strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata") {
		return n
	}
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}, ObjectMeta: n.ObjectMeta}
}

func (a *nodeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		a.mu.Lock()
		n := a.nodes[r.PathValue("name")]
		a.mu.Unlock()
		if n != nil {
			_ = json.NewEncoder(w).Encode(object(r, n))
			return
		}
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound,
			Message: `nodes "` + r.PathValue("name") + `" not found`})
	})
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		a.mu.Lock()
		version := strconv.Itoa(a.version)
		var items []any
		for _, name := range slices.Sorted(maps.Keys(a.nodes)) {
			items = append(items, object(r, a.nodes[name]))
		}
		events := make(chan watchEvent, 64)
		watch := r.URL.Query().Get("watch") == "true"
		if watch {
			a.watchers = append(a.watchers, events)
		}
		a.mu.Unlock()
		if !watch {
			kind, apiVersion := "NodeList", "v1"
			if strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadataList") {
				kind, apiVersion = "PartialObjectMetadataList", "meta.k8s.io/v1"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": apiVersion, "kind": kind,
				"metadata": map[string]string{"resourceVersion": version}, "items": items})
			return
		}
		defer func() {
			a.mu.Lock()
			a.watchers = slices.DeleteFunc(a.watchers, func(c chan watchEvent) bool { return c == events })
			a.mu.Unlock()
		}()
		enc := json.NewEncoder(w)
		send := func(typ string, obj any) {
			_ = enc.Encode(map[string]any{"type": typ, "object": obj})
			w.(http.Flusher).Flush()
		}
		if r.URL.Query().Get("sendInitialEvents") == "true" {
			for _, item := range items {
				send("ADDED", item)
			}
			bookmark := &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
				ObjectMeta: metav1.ObjectMeta{ResourceVersion: version, Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
			send("BOOKMARK", object(r, bookmark))
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-events:
				send(e.typ, object(r, e.node))
			}
		}
	})
	return mux
}

func TestNodeClientOverREST(t *testing.T) {
	nodes, api := newNodeClient(t, node("n2", 11250), node("n1", 0))
	for name, want := range map[string]int{"n2": 11250, "n1": 10250} {
		if got, err := kubeletPort(t.Context(), nodes, name); err != nil || got != want {
			t.Errorf("kubelet port of %s: %d, %v; want %d", name, got, err, want)
		}
	}
	if _, err := kubeletPort(t.Context(), nodes, "missing"); err == nil {
		t.Error("kubelet port of a missing node: no error")
	} else if want := `get node "missing": nodes "missing" not found`; err.Error() != want {
		t.Errorf("missing node: %q, want %q", err, want)
	}

	c := &Collector{deps: Deps{Nodes: nodes}}
	synced := make(chan []string, 4)
	done := make(chan error, 1)
	go func() { done <- c.watchNodes(t.Context(), func(n []string) { synced <- n }) }()
	// Syncs may repeat a node set; each must be followed by the wanted one.
	waitFor := func(want ...string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		var last []string
		for !slices.Equal(last, want) {
			select {
			case last = <-synced:
			case err := <-done:
				t.Fatalf("watchNodes ended: %v", err)
			case <-timeout:
				t.Fatalf("nodes %v after 10 s, want %v", last, want)
			}
		}
	}
	waitFor("n1", "n2")
	api.add(node("n3", 0))
	waitFor("n1", "n2", "n3")
	api.delete("n1")
	waitFor("n2", "n3")
}
