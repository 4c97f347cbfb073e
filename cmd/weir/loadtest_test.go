package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestLoadtestFlags checks that a bad flag is refused before anything
// starts, with a message naming the flag. The scenarios themselves run
// in the loadtest package, against a built weir binary.
func TestLoadtestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--mode", "cluster"}, 1, `--mode "cluster": want all, stages or collector`},
		{[]string{"--scenario", "flood"}, 1, `--scenario "flood": want one of steady, outage, nats-restart, kill, churn-storm`},
		{[]string{"--scenario", "nats-restart"}, 1, "needs --mode stages"},
		{[]string{"--peer", "telegraf"}, 1, `--peer "telegraf"`},
		{[]string{"--nodes", "0"}, 1, "--nodes 0: want at least 1"},
		{[]string{"--sources", "cadvisor,healthz"}, 1, `--sources: unknown source "healthz"; want some of kubelet,cadvisor,resource,probes,summary,kubeproxy`},
		{[]string{"--collector-memory-limit", "lots"}, 1, `invalid value "lots" for flag -collector-memory-limit: bad size`},
		{[]string{"--sources", "summary", "--peer", "vmagent"}, 1, "--peer: the peers scrape no JSON endpoint"},
		{[]string{"--sink-label-cache-size", "big"}, 1, `invalid value "big" for flag -sink-label-cache-size: bad size`},
		{[]string{"--sink-stream", "raw"}, 1, `--sink-stream "raw": want route or enriched`},
		{[]string{"--sink-stream", "enriched", "--mode", "stages"}, 1, "--sink-stream enriched: the router has no route to make; leave it out of --stages"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"loadtest"}, tc.args...), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q, want it to contain %q", stderr.String(), tc.want)
			}
		})
	}
}
