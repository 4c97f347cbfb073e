package loadtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The peers Weir is measured against: other agents that scrape the same
// fleet and remote-write what they scraped.
const (
	PeerVMAgent         = "vmagent"
	PeerPrometheusAgent = "prometheus-agent"
)

// Peers lists the peers --peer accepts.
var Peers = []string{PeerVMAgent, PeerPrometheusAgent}

// PeerPrograms are the programs of the peers, from Debian's packages
// victoria-metrics and prometheus.
var PeerPrograms = map[string]string{
	PeerVMAgent:         "vmagent",
	PeerPrometheusAgent: "prometheus",
}

// PeerBinary returns the path of a peer's program, or an error naming the
// Debian package to install.
func PeerBinary(peer string) (string, error) {
	name, ok := PeerPrograms[peer]
	if !ok {
		return "", fmt.Errorf("peer %q: want one of %s", peer, strings.Join(Peers, ", "))
	}
	path, err := exec.LookPath(name)
	if err != nil {
		pkg := map[string]string{PeerVMAgent: "victoria-metrics", PeerPrometheusAgent: "prometheus"}[peer]
		return "", fmt.Errorf("peer %s: %w (install the Debian package %s)", peer, err, pkg)
	}
	return path, nil
}

// scrapeConfig is a Prometheus scrape configuration of every target of the
// fleet, one job per endpoint path and port, read by both peers.
func scrapeConfig(f *Fleet, interval time.Duration, remoteWrite string) string {
	var b strings.Builder
	timeout := min(interval, 10*time.Second)
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n", promDuration(interval), promDuration(timeout))
	if remoteWrite != "" {
		fmt.Fprintf(&b, "remote_write:\n  - url: %s\n", remoteWrite)
	}
	b.WriteString("scrape_configs:\n")
	for _, e := range f.cfg.Endpoints {
		fmt.Fprintf(&b, "  - job_name: %s\n    metrics_path: %s\n    static_configs:\n      - targets:\n", e.Source, e.Path)
		for _, n := range f.Nodes {
			for _, t := range n.Targets {
				if t.Source == e.Source {
					fmt.Fprintf(&b, "          - %s\n", t.Host)
				}
			}
		}
	}
	return b.String()
}

// promDuration writes d as Prometheus reads durations: whole milliseconds.
func promDuration(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// peerPipeline writes the peer's configuration and returns its process.
func peerPipeline(cfg Config, peer string, p *pipeline, dir string) error {
	bin, err := PeerBinary(peer)
	if err != nil {
		return err
	}
	listen, err := freePort()
	if err != nil {
		return err
	}
	dir = filepath.Join(dir, peer)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	file := filepath.Join(dir, "scrape.yaml")
	var args []string
	switch peer {
	case PeerVMAgent:
		err = os.WriteFile(file, []byte(scrapeConfig(p.fleet, cfg.Interval, "")), 0o600)
		args = []string{
			"-promscrape.config=" + file, "-remoteWrite.url=" + p.writeURL,
			"-remoteWrite.tmpDataPath=" + filepath.Join(dir, "data"), "-httpListenAddr=" + listen,
			"-loggerLevel=ERROR",
		}
	case PeerPrometheusAgent:
		err = os.WriteFile(file, []byte(scrapeConfig(p.fleet, cfg.Interval, p.writeURL)), 0o600)
		// Prometheus 2.42 has agent mode behind a feature flag (--agent came in 2.47).
		args = []string{
			"--enable-feature=agent", "--config.file=" + file, "--storage.agent.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + listen, "--log.level=error",
		}
	}
	if err != nil {
		return err
	}
	p.procs = []*Proc{{Name: peer, Path: bin, Args: args, Log: cfg.Log}}
	return nil
}
