package collector

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// apiServerNodes serves Node objects as the API server does: get, list,
// and a watch that streams the initial nodes ending with the bookmark of
// a watch list, then the nodes added later.
func apiServerNodes(t *testing.T, initial []*corev1.Node, later <-chan *corev1.Node) *httptest.Server {
	t.Helper()
	typed := func(n *corev1.Node) *corev1.Node {
		n = n.DeepCopy()
		n.APIVersion, n.Kind, n.ResourceVersion = "v1", "Node", "1"
		return n
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for _, n := range initial {
			if n.Name == r.PathValue("name") {
				_ = json.NewEncoder(w).Encode(typed(n))
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound,
			Message: `nodes "` + r.PathValue("name") + `" not found`})
	})
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		q := r.URL.Query()
		if q.Get("watch") != "true" {
			list := corev1.NodeList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NodeList"}, ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
			for _, n := range initial {
				list.Items = append(list.Items, *typed(n))
			}
			_ = json.NewEncoder(w).Encode(list)
			return
		}
		enc := json.NewEncoder(w)
		send := func(typ string, obj any) {
			_ = enc.Encode(map[string]any{"type": typ, "object": obj})
			w.(http.Flusher).Flush()
		}
		if q.Get("sendInitialEvents") == "true" {
			for _, n := range initial {
				send("ADDED", typed(n))
			}
			bookmark := &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
				ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
			send("BOOKMARK", bookmark)
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case n := <-later:
				send("ADDED", typed(n))
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestNodeClientOverREST(t *testing.T) {
	later := make(chan *corev1.Node, 1)
	srv := apiServerNodes(t, []*corev1.Node{node("n2", 11250), node("n1", 0)}, later)
	nodes, err := NewNodeClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
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
	later <- node("n3", 0)
	waitFor("n1", "n2", "n3")
}
