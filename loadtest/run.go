package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Modes of running Weir.
const (
	ModeAll       = "all"       // one `weir all` process with its embedded NATS server
	ModeStages    = "stages"    // a NATS server process and one process per stage
	ModeCollector = "collector" // a NATS server and `weir collector` alone: issue 3's CPU and RSS goals
)

// Scenarios: what happens to the pipeline while the fleet is scraped.
const (
	ScenarioSteady      = "steady"       // nothing
	ScenarioOutage      = "outage"       // the backend answers 503 from 1/4 to 1/2 of the run
	ScenarioNATSRestart = "nats-restart" // the NATS server stops at 1/3 of the run and starts again
	ScenarioKill        = "kill"         // a stage is killed with SIGKILL at 1/3 and started again
	ScenarioChurnStorm  = "churn-storm"  // every pod of every node is replaced at each scrape from 1/3 to 2/3
)

// forgetAfter is how long the receiver remembers a series that stopped:
// a duplicate that comes later than this counts as unique.
const forgetAfter = 5 * time.Minute

// Scenarios lists every scenario.
var Scenarios = []string{ScenarioSteady, ScenarioOutage, ScenarioNATSRestart, ScenarioKill, ScenarioChurnStorm}

// Config is one load test run.
type Config struct {
	Weir string // path of the weir binary
	// WeirCollector is the path of the weir-collector binary, which runs
	// the collector where set; empty runs `weir collector`.
	WeirCollector string
	Mode          string
	Scenario      string
	// Stages are the `weir <stage>` commands ModeStages runs, in pipeline
	// order, each with the one generated configuration file; default
	// DefaultStages.
	Stages []string
	// KillStage is the process ScenarioKill kills: "weir-collector" or
	// "weir-sink" in ModeStages; in ModeAll it is always "weir-all".
	KillStage string
	// SinkStream is what the sink reads, as sinks[].stream: SinkStreamRoute
	// (the default), the route the router makes, or SinkStreamEnriched,
	// WEIR_ENRICHED itself, where no router runs: what the route's hop
	// costs is the difference.
	SinkStream string
	Peers      []string
	Fleet      FleetConfig
	// CollectorMemoryLimit is the collector's memory_limit, in bytes, as a
	// DaemonSet's configuration sets it; 0 leaves the default.
	CollectorMemoryLimit int64
	// SinkLabelCacheSize is the sink's label_cache_size, in bytes; 0 leaves
	// the default.
	SinkLabelCacheSize int64
	Interval           time.Duration // scrape interval
	Duration           time.Duration // how long the fleet is scraped
	// Warmup is the start of the run whose samples the latency after
	// warm-up leaves out: every cache is cold, every target's first scrape
	// comes at once, and the stages are still connecting.
	Warmup time.Duration
	Drain  time.Duration // longest wait, after the fleet stops, for the rest to arrive
	// AckWait is the sink's ack_wait: after a SIGKILL, what the killed
	// stage held comes back this long after it was delivered.
	AckWait       time.Duration
	Dir           string    // configuration, stores and logs; a temporary one when empty
	Progress      io.Writer // a progress line every ProgressEvery; none when nil
	ProgressEvery time.Duration
	Log           io.Writer // output of every process; discarded when nil
}

// What the sink reads (Config.SinkStream).
const (
	SinkStreamRoute    = "route"
	SinkStreamEnriched = "enriched"
)

// DefaultStages are the stages of the pipeline, in order. The sink reads
// the route the router makes for it, so the router is needed, and the
// enricher feeds the router and the alerter.
var DefaultStages = []string{"collector", "enricher", "router", "sink", "alerter"}

func (c Config) sinkStream() string { return cmp.Or(c.SinkStream, SinkStreamRoute) }

func (c Config) stages() []string {
	if len(c.Stages) == 0 {
		return DefaultStages
	}
	return c.Stages
}

// Validate checks the run can start, naming the flag at fault.
func (c Config) Validate() error {
	var errs []error
	if c.Weir == "" {
		errs = append(errs, errors.New("weir binary: empty path"))
	}
	if !slices.Contains([]string{ModeAll, ModeStages, ModeCollector}, c.Mode) {
		errs = append(errs, fmt.Errorf("--mode %q: want all, stages or collector", c.Mode))
	}
	if !slices.Contains(Scenarios, c.Scenario) {
		errs = append(errs, fmt.Errorf("--scenario %q: want one of %s", c.Scenario, strings.Join(Scenarios, ", ")))
	}
	if c.Mode == ModeCollector && c.Scenario != ScenarioSteady {
		errs = append(errs, fmt.Errorf("--scenario %s: --mode collector runs no sink, only steady", c.Scenario))
	}
	if c.Scenario == ScenarioNATSRestart && c.Mode != ModeStages {
		errs = append(errs, errors.New("--scenario nats-restart: needs --mode stages, where NATS runs in its own process"))
	}
	switch {
	case c.sinkStream() != SinkStreamRoute && c.sinkStream() != SinkStreamEnriched:
		errs = append(errs, fmt.Errorf("--sink-stream %q: want %s or %s", c.SinkStream, SinkStreamRoute, SinkStreamEnriched))
	case c.SinkStream == SinkStreamEnriched && c.Mode == ModeStages && slices.Contains(c.stages(), "router"):
		errs = append(errs, errors.New("--sink-stream enriched: the router has no route to make; leave it out of --stages"))
	}
	if c.Mode == ModeStages && (!slices.Contains(c.stages(), "collector") || !slices.Contains(c.stages(), "sink")) {
		errs = append(errs, fmt.Errorf("--stages %s: want at least collector and sink", strings.Join(c.stages(), ",")))
	}
	if c.Scenario == ScenarioKill && c.Mode == ModeStages && !slices.Contains(c.stages(), strings.TrimPrefix(c.KillStage, "weir-")) {
		errs = append(errs, fmt.Errorf("--kill %q: want weir-<stage> of one of --stages %s", c.KillStage, strings.Join(c.stages(), ",")))
	}
	for _, p := range c.Peers {
		if !slices.Contains(Peers, p) {
			errs = append(errs, fmt.Errorf("--peer %q: want one of %s", p, strings.Join(Peers, ", ")))
		}
	}
	if len(c.Peers) > 0 && len(c.Fleet.forPeers().Endpoints) == 0 {
		errs = append(errs, errors.New("--peer: the peers scrape no JSON endpoint, and --sources names no other"))
	}
	if c.Fleet.Nodes < 1 {
		errs = append(errs, fmt.Errorf("--nodes %d: want at least 1", c.Fleet.Nodes))
	}
	if c.Interval < 100*time.Millisecond || c.Duration <= 0 || c.Drain <= 0 || c.AckWait < time.Second || c.Warmup < 0 {
		errs = append(errs, errors.New("--interval (at least 100ms), --duration and --drain must be positive, --warmup not negative, --ack-wait at least 1s"))
	}
	return errors.Join(errs...)
}

// Run runs the load test: it starts the fleets, Weir and the peers,
// plays the scenario, stops the fleets, waits for what was offered to
// arrive, and measures.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	} else {
		// Every process writes its output from goroutines of its own.
		cfg.Log = &lockedWriter{w: cfg.Log}
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	// A fresh directory every run: a store left by an earlier run would
	// hand its old samples to this run's receiver.
	dir, err := os.MkdirTemp(cfg.Dir, "weir-loadtest-")
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		defer os.RemoveAll(dir)
	}

	var pipes []*pipeline
	defer func() {
		for _, p := range pipes {
			p.close()
		}
	}()
	weir, err := newPipeline("weir", cfg.Fleet)
	if err != nil {
		return nil, err
	}
	pipes = append(pipes, weir)
	natsURL, err := weirPipeline(cfg, weir, dir)
	if err != nil {
		return nil, err
	}
	for _, peer := range cfg.Peers {
		p, err := newPipeline(peer, cfg.Fleet.forPeers())
		if err != nil {
			return nil, err
		}
		pipes = append(pipes, p)
		if err := peerPipeline(cfg, peer, p, dir); err != nil {
			return nil, err
		}
	}

	harnessStart, _ := procCPU(os.Getpid())
	start := time.Now()
	for _, p := range pipes {
		p.receiver.SteadyFrom(start.Add(cfg.Warmup))
		if err := p.start(); err != nil {
			return nil, err
		}
	}
	sc := newScenario(cfg, pipes)
	if err := sc.play(ctx, start, func(elapsed time.Duration) { progress(cfg.Progress, elapsed, pipes) }); err != nil {
		return nil, err
	}
	scraped := time.Since(start)
	for _, p := range pipes {
		p.receiver.FleetStopped(time.Now())
		p.fleet.Stop(cfg.Interval)
	}
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "%6s  fleet stopped; draining (at most %s)\n", scraped.Round(time.Second), cfg.Drain)
	}
	drained := drain(ctx, cfg, pipes, start)

	rep := &Report{
		Scenario: cfg.Scenario, Mode: cfg.Mode, SinkStream: cfg.sinkStream(), Nodes: cfg.Fleet.Nodes,
		IntervalSeconds: cfg.Interval.Seconds(), DurationSeconds: scraped.Seconds(), WarmupSeconds: cfg.Warmup.Seconds(),
		SamplesPerNodeScrape: weir.fleet.SamplesPerScrape(),
		Peers:                map[string]*PeerResult{},
	}
	if stores, err := streamBytes(ctx, natsURL); err == nil {
		rep.JetStreamStreamBytes = stores
	} else {
		rep.Notes = append(rep.Notes, fmt.Sprintf("jetstream stream sizes not read: %v", err))
	}
	for _, p := range pipes {
		r := measure(p, drained[p.name])
		if p == weir {
			rep.Result = r
			var total int64
			for _, b := range rep.JetStreamStreamBytes {
				total += b
			}
			if r.OfferedSamples > 0 {
				rep.JetStreamBytesPerSample = float64(total) / float64(r.OfferedSamples)
			}
			continue
		}
		rep.Peers[p.name] = &PeerResult{Result: r}
	}
	rep.compare()
	if harness, err := procCPU(os.Getpid()); err == nil {
		rep.HarnessCPUSeconds = (harness - harnessStart).Seconds()
	}
	// Stop every process before reading their errors: a run that ended on
	// its own (not by our signal) is a failure the report must show.
	ran := pipes
	for _, p := range pipes {
		p.close()
	}
	pipes = nil
	for _, p := range ran {
		for _, pr := range p.procs {
			if err := pr.Err(); err != nil {
				rep.Notes = append(rep.Notes, err.Error())
			}
		}
	}
	return rep, nil
}

// drain waits until every pipeline delivered what its fleet offered, or
// until cfg.Drain passed; it returns when each pipeline's last sample came.
func drain(ctx context.Context, cfg Config, pipes []*pipeline, start time.Time) map[string]time.Duration {
	done := map[string]time.Duration{}
	deadline := time.Now().Add(cfg.Drain)
	last := map[string]int64{}
	nextTick := time.Now().Add(cfg.ProgressEvery)
	for {
		if time.Now().After(nextTick) {
			progress(cfg.Progress, time.Since(start), pipes)
			nextTick = nextTick.Add(cfg.ProgressEvery)
		}
		pending := false
		for _, p := range pipes {
			if _, ok := done[p.name]; ok {
				continue
			}
			if p.behind() <= 0 && p.fleet.Refusing() {
				done[p.name] = time.Since(start)
				continue
			}
			pending = true
			if got := p.receiver.Stats().Offered(); got != last[p.name] {
				last[p.name] = got
				done[p.name+"/last"] = time.Since(start)
			}
		}
		if !pending || time.Now().After(deadline) || ctx.Err() != nil {
			for _, p := range pipes {
				if _, ok := done[p.name]; !ok {
					done[p.name] = max(done[p.name+"/last"], cfg.Duration)
				}
			}
			return done
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamBytes returns the bytes each Weir stream holds.
func streamBytes(ctx context.Context, url string) (map[string]int64, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := map[string]int64{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		out[info.Config.Name] = int64(info.State.Bytes)
	}
	return out, streams.Err()
}

func progress(w io.Writer, elapsed time.Duration, pipes []*pipeline) {
	for _, p := range pipes {
		// Memory follows the live series, not every pod that ever was.
		p.receiver.Forget(time.Now().Add(-forgetAfter))
	}
	if w == nil {
		return
	}
	var parts []string
	for _, p := range pipes {
		f, r := p.fleet.Stats(), p.receiver.Stats()
		if p.sinkless {
			parts = append(parts, fmt.Sprintf("%s: scrapes=%d offered=%d", p.name, f.Scrapes, f.Offered))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: scrapes=%d offered=%d delivered=%d behind=%d dup=%d p99=%s",
			p.name, f.Scrapes, offered(f, r), r.Offered(), p.behind(), r.Duplicates, seconds(p.receiver.Latency(0.99))))
	}
	fmt.Fprintf(w, "%6s  %s\n", elapsed.Round(time.Second), strings.Join(parts, " | "))
}

func seconds(s float64) string {
	if s != s {
		return "-"
	}
	return fmt.Sprintf("%.3gs", s)
}

// lockedWriter lets several processes write to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
