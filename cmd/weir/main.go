// Command weir runs the stages of the Weir pipeline: one stage per process
// in production, or all of them in one process with an embedded NATS
// JetStream server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/weirmetrics/weir/internal/cli"
)

// command is one subcommand: its flags are parsed where it is registered.
type command struct {
	name    string
	summary string
	// run parses args with fs and runs the command until ctx ends; it
	// prints its results to stdout.
	run func(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error
}

var commands = []command{
	{"collector", "scrape the kubelet and kube-proxy of this node and publish to NATS", runCollector},
	{"enricher", "add cluster, node and workload labels from the Kubernetes API to every scrape", runEnricher},
	{"sink", "remote-write one sink's stream to its backend", runSink},
	{"alerter", "evaluate alert rules on the enriched stream and notify Alertmanagers", runAlerter},
	{"rules", "`rules check FILE…` validates rule files; `rules test FILE…` runs their unit tests", runRules},
	{"router", "split the enriched stream into one stream per route (routes:)", runRouter},
	{"all", "every stage in one process, with an embedded NATS JetStream server", runAll},
	{"demo", "`weir all` against a simulated fleet serving real captures, with loss accounting", runDemo},
	{"loadtest", "a simulated fleet through the whole pipeline, with loss, latency and CPU accounting beside vmagent and Prometheus", runLoadtest},
	{"version", "print the version", runVersion},
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error already explained by the usage text.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("weir "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		err := c.run(ctx, fs, args[1:], stdout)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(stderr, "weir %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "weir: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Weir is a stream pipeline for Kubernetes node metrics.")
	fmt.Fprintln(w, "\nUsage: weir <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'weir <command> --help' for the flags of a command.")
}

func runVersion(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "weir", cli.Version())
	return nil
}
