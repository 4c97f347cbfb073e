package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/loadtest"
)

func runLoadtest(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	cfg := loadtest.Config{}
	fs.StringVar(&cfg.Mode, "mode", loadtest.ModeAll, "all: one `weir all` process; stages: a NATS server process and one process per stage; collector: NATS and the collector alone (issue 3's CPU and RSS goals)")
	fs.StringVar(&cfg.Scenario, "scenario", loadtest.ScenarioSteady, "one of "+strings.Join(loadtest.Scenarios, ", "))
	fs.StringVar(&cfg.KillStage, "kill", "weir-sink", "process the kill scenario kills in --mode stages: weir-<stage>")
	fs.StringVar(&cfg.SinkStream, "sink-stream", loadtest.SinkStreamRoute, "what the sink reads: route (the router's stream for it) or enriched (WEIR_ENRICHED: no router runs; leave it out of --stages)")
	stages := fs.String("stages", strings.Join(loadtest.DefaultStages, ","), "`weir <stage>` commands --mode stages runs, in pipeline order, each with the generated configuration file")
	nodes := fs.Int("nodes", 10, "simulated nodes")
	sources := fs.String("sources", "kubelet,cadvisor,resource,probes,summary,kubeproxy", "endpoints every node serves, comma separated")
	fs.IntVar(&cfg.Fleet.ChurnScrapes, "churn", 20, "replace each pod every this many scrapes (0: no churn)")
	fs.DurationVar(&cfg.Interval, "interval", 5*time.Second, "scrape interval")
	fs.Func("collector-memory-limit", "collector.memory_limit of the collector, e.g. 24MiB (default: the collector's own)", func(v string) error {
		n, err := config.ParseByteSize(v)
		cfg.CollectorMemoryLimit = int64(n)
		return err
	})
	fs.Func("sink-label-cache-size", "label_cache_size of the sink, e.g. 256MiB (default: the sink's own)", func(v string) error {
		n, err := config.ParseByteSize(v)
		cfg.SinkLabelCacheSize = int64(n)
		return err
	})
	fs.DurationVar(&cfg.Duration, "duration", 60*time.Second, "how long the fleet is scraped")
	fs.DurationVar(&cfg.Warmup, "warmup", 15*time.Second, "the start-up, whose samples the latency after warm-up leaves out")
	fs.DurationVar(&cfg.Drain, "drain", 60*time.Second, "longest wait after the fleet stops for the rest to arrive")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 5*time.Second, "ack_wait of the sink: how soon what a killed stage held is delivered again")
	fs.DurationVar(&cfg.ProgressEvery, "report", 5*time.Second, "how often to print progress")
	var peers stringList
	fs.Var(&peers, "peer", "also run this peer on an identical fleet: vmagent or prometheus-agent (repeatable)")
	jsonFile := fs.String("json", "", "also write the report as JSON to this file")
	logFile := fs.String("log", "", "write the output of every process to this file (default: discarded)")
	dir := fs.String("dir", "", "keep each run's configuration files and stores in a new directory under this one (default: a temporary one, removed at the end)")
	weirBin := fs.String("weir", "", "weir binary the pipeline runs (default: this one)")
	collectorBin := fs.String("weir-collector", "", "weir-collector binary that runs the collector (default: `weir collector`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Peers = peers
	cfg.Stages = strings.Split(*stages, ",")
	cfg.Fleet.Prefix, cfg.Fleet.Nodes = "node", *nodes
	for _, s := range strings.Split(*sources, ",") {
		e, ok := endpointOf(strings.TrimSpace(s))
		if !ok {
			var names []string
			for _, e := range loadtest.AllEndpoints {
				names = append(names, string(e.Source))
			}
			return fmt.Errorf("--sources: unknown source %q; want some of %s", s, strings.Join(names, ","))
		}
		cfg.Fleet.Endpoints = append(cfg.Fleet.Endpoints, e)
	}
	cfg.Weir, cfg.WeirCollector, cfg.Dir, cfg.Progress = *weirBin, *collectorBin, *dir, stdout
	if cfg.Weir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the weir binary: %w (pass --weir)", err)
		}
		cfg.Weir = exe
	}
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Log = f
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "weir loadtest: %s, mode %s, %d nodes × %d endpoints every %s for %s, peers %v\n",
		cfg.Scenario, cfg.Mode, *nodes, len(cfg.Fleet.Endpoints), cfg.Interval, cfg.Duration, cfg.Peers)
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.WriteText(stdout)
	if *jsonFile != "" {
		f, err := os.Create(*jsonFile)
		if err != nil {
			return err
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if rep.LostSamples > 0 {
		return fmt.Errorf("%d %w", rep.LostSamples, errLost)
	}
	return nil
}

func endpointOf(source string) (loadtest.Endpoint, bool) {
	for _, e := range loadtest.AllEndpoints {
		if string(e.Source) == source {
			return e, true
		}
	}
	return loadtest.Endpoint{}, false
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
