package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// Node is one simulated node: a kubelet and a kube-proxy, each on its own
// loopback port, serving the real captures with timestamps moved to now.
type Node struct {
	Name         string
	KubeletURL   string // base URL; the paths are those of fixtures.KubeletEndpoints
	KubeProxyURL string // base URL of kube-proxy's /metrics
}

// Fleet is a set of simulated nodes.
type Fleet struct {
	Nodes   []Node
	servers []*http.Server
	done    chan error
}

// StartFleet starts n nodes named <prefix>-0 … <prefix>-(n-1).
func StartFleet(prefix string, n int) (*Fleet, error) {
	f := &Fleet{done: make(chan error, 2*n)}
	kubelet := fixtures.Handler(fixtures.KubeletEndpoints, time.Now)
	proxy := fixtures.Handler(fixtures.KubeProxyEndpoints, time.Now)
	for i := range n {
		k, err := f.serve(kubelet)
		if err != nil {
			f.Close()
			return nil, err
		}
		p, err := f.serve(proxy)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.Nodes = append(f.Nodes, Node{Name: fmt.Sprintf("%s-%d", prefix, i), KubeletURL: k, KubeProxyURL: p})
	}
	return f, nil
}

func (f *Fleet) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	f.servers = append(f.servers, srv)
	go func() { f.done <- srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Close stops every node and waits for their servers to end.
func (f *Fleet) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range f.servers {
		_ = s.Shutdown(ctx)
	}
	for range f.servers {
		<-f.done // Serve returns ErrServerClosed once Shutdown is called
	}
	f.servers = nil
}
