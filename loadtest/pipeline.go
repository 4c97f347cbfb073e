package loadtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weirmetrics/weir/alerter/rules"
)

// pipeline is one scraper under test with its own fleet and receiver:
// Weir (several processes) or a peer (one process).
type pipeline struct {
	name     string
	fleet    *Fleet
	receiver *Receiver
	writeURL string
	stopRecv func()
	procs    []*Proc
	// sinkless pipelines (the collector alone) deliver nothing to count.
	sinkless bool
}

func newPipeline(name string, fc FleetConfig) (*pipeline, error) {
	fleet, err := NewFleet(fc)
	if err != nil {
		return nil, err
	}
	p := &pipeline{name: name, fleet: fleet, receiver: NewReceiver()}
	p.receiver.scrapeSize = fleet.ScrapeSize
	p.writeURL, p.stopRecv, err = ServeReceiver(p.receiver)
	if err != nil {
		fleet.Close()
		return nil, err
	}
	return p, nil
}

func (p *pipeline) start() error {
	for _, pr := range p.procs {
		if err := pr.Start(); err != nil {
			return err
		}
	}
	return nil
}

// close stops the processes newest first (the NATS server last), then the
// receiver and the fleet.
func (p *pipeline) close() {
	for i := len(p.procs) - 1; i >= 0; i-- {
		p.procs[i].Stop(10 * time.Second)
	}
	p.stopRecv()
	p.fleet.Close()
}

// behind is what the fleet offered and the receiver has not yet counted.
func (p *pipeline) behind() int64 {
	if p.sinkless {
		return 0
	}
	return offered(p.fleet.Stats(), p.receiver.Stats()) - p.receiver.Stats().Offered()
}

// offered is what the fleet served in scrapes the scraper made: a scrape
// the scraper reports failed (up=0; it gave up waiting, say) is taken out,
// unless the fleet could not write it and so never counted it.
func offered(f FleetStats, r ReceiverStats) int64 {
	return f.Offered - max(0, r.FailedScrapeSamples-f.FailedSamples)
}

func (p *pipeline) proc(name string) *Proc {
	for _, pr := range p.procs {
		if pr.Name == name {
			return pr
		}
	}
	return nil
}

// ServeReceiver serves h as a remote-write endpoint on a loopback port and
// returns its URL and a function that stops it.
func ServeReceiver(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("receiver: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/write", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/api/v1/write", func() { _ = srv.Close(); <-done }, nil
}

// freePort returns a loopback address no one listens on right now. It is
// below Linux's ephemeral range (32768 on), where port 0 would pick it:
// between now and the process listening on it, an outgoing connection of
// the fleet, a peer or a stage could take a port of that range, and the
// process would fail to start (it did, once in a few hundred runs).
func freePort() (string, error) {
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))); err == nil {
			defer ln.Close()
			return ln.Addr().String(), nil
		}
	}
	return "", fmt.Errorf("no free loopback port: %w", err)
}

// weirPipeline writes the configuration files of Weir and returns its
// processes for the mode: one `weir all`, or a NATS server (`weir all`
// with no stage configured) with `weir collector` and `weir sink` beside it,
// or the NATS server and the collector alone.
func weirPipeline(cfg Config, p *pipeline, dir string) (natsURL string, err error) {
	natsAddr, err := freePort()
	if err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(natsAddr)
	natsURL = "nats://" + natsAddr
	listen := func() string { a, _ := freePort(); return a }
	timeout := min(cfg.Interval, 10*time.Second)

	var shared strings.Builder
	fmt.Fprintf(&shared, "cluster: loadtest\ndata_dir: %s\nlisten_address: %s\n", filepath.Join(dir, "nats"), listen())
	fmt.Fprintf(&shared, "log:\n  level: warn\nnats:\n  url: %s\n  embedded:\n    host: %s\n    port: %s\n", natsURL, host, port)
	natsOnly := shared.String()

	var stages strings.Builder
	stages.WriteString(natsOnly)
	fmt.Fprintf(&stages, "collector:\n  listen_address: %s\n  scrape_interval: %s\n  scrape_timeout: %s\n", listen(), cfg.Interval, timeout)
	if cfg.CollectorMemoryLimit > 0 {
		fmt.Fprintf(&stages, "  memory_limit: %d\n", cfg.CollectorMemoryLimit)
	}
	stages.WriteString("  targets:\n")
	for _, n := range p.fleet.Nodes {
		for _, t := range n.Targets {
			fmt.Fprintf(&stages, "    - url: %s\n      source: %s\n      node: %s\n", t.URL, t.Source, n.Name)
		}
	}
	if cfg.Mode != ModeCollector {
		fmt.Fprintf(&stages, "enricher:\n  listen_address: %s\nrouter:\n  listen_address: %s\n", listen(), listen())
		fmt.Fprintf(&stages, "sinks:\n  - name: loadtest\n    listen_address: %s\n    url: %s\n    ack_wait: %s\n    stream: %s\n",
			listen(), p.writeURL, cfg.AckWait, cfg.sinkStream())
		if cfg.SinkLabelCacheSize > 0 {
			fmt.Fprintf(&stages, "    label_cache_size: %d\n", cfg.SinkLabelCacheSize)
		}
		// The alerter evaluates the default rule pack on the enriched
		// stream, as in a deployment.
		rulesGlob, err := rules.Write(filepath.Join(dir, "rules"))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&stages, "alerter:\n  listen_address: %s\n  rule_files: [%q]\n", listen(), rulesGlob)
	}
	natsFile, stagesFile := filepath.Join(dir, "nats.yaml"), filepath.Join(dir, "weir.yaml")
	if err := os.WriteFile(natsFile, []byte(natsOnly), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(stagesFile, []byte(stages.String()), 0o600); err != nil {
		return "", err
	}
	proc := func(name string, args ...string) *Proc {
		if name == "weir-collector" && cfg.WeirCollector != "" {
			return &Proc{Name: name, Path: cfg.WeirCollector, Args: args[1:], Log: cfg.Log}
		}
		return &Proc{Name: name, Path: cfg.Weir, Args: args, Log: cfg.Log}
	}
	switch cfg.Mode {
	case ModeAll:
		p.procs = []*Proc{proc("weir-all", "all", "--config", stagesFile)}
	case ModeStages:
		// Downstream first, so that the collector starts last and stops first.
		p.procs = []*Proc{proc("nats", "all", "--config", natsFile)}
		for _, stage := range slices.Backward(cfg.stages()) {
			p.procs = append(p.procs, proc("weir-"+stage, stage, "--config", stagesFile))
		}
	case ModeCollector:
		p.sinkless = true
		p.procs = []*Proc{
			proc("nats", "all", "--config", natsFile),
			proc("weir-collector", "collector", "--config", stagesFile),
		}
	}
	return natsURL, nil
}
