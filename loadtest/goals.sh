#!/usr/bin/env bash
# Measures the goals of issue 3 (collector) and issue 7 (whole pipeline)
# with `weir loadtest`, side by side with vmagent and Prometheus's agent,
# and leaves a JSON report of each run in $OUT. The figures and commands
# are recorded in BENCHMARKS.md. Each run takes about a minute; run on a
# quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/weir-goals}
DURATION=${DURATION:-60s}
mkdir -p "$OUT"
# Built as the Dockerfile builds the images: static, without symbols.
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$OUT/" ./cmd/weir ./cmd/weir-collector
weir() { "$OUT/weir" "$@"; }

case "${1:-all}" in
all | collector-cpu | collector-rss | pipeline-peers | pipeline-rate) ;;
*)
  echo "usage: $0 [all|collector-cpu|collector-rss|pipeline-peers|pipeline-rate]" >&2
  exit 2
  ;;
esac

case "${1:-all}" in
all | collector-cpu)
  # Issue 3: CPU per sample of scrape + parse + encode + publish of the 1.35
  # cAdvisor capture by weir-collector (NATS in its own process) versus
  # vmagent scraping and remote-writing the same capture, in one run.
  weir loadtest --mode collector --weir-collector "$OUT/weir-collector" --sources cadvisor --churn 0 --nodes "${CPU_NODES:-10}" --interval 1s \
    --duration "$DURATION" --peer vmagent --json "$OUT/collector-cpu.json"
  ;;&
all | collector-rss)
  # Issue 3: peak RSS of weir-collector, the DaemonSet's binary, for one
  # node serving the five kubelet sources of the 1.35 captures (/metrics,
  # /metrics/cadvisor, /metrics/resource, /metrics/probes, /stats/summary)
  # and kube-proxy at 15 s. Peak RSS (VmHWM) counts the pages of the binary
  # the process touched besides its memory: the report gives RssAnon and
  # RssFile of /proc/PID/status. COLLECTOR_MEMORY_LIMIT sets
  # collector.memory_limit (e.g. 32MiB; default: 90% of the cgroup's
  # limit, none here).
  weir loadtest --mode collector --weir-collector "$OUT/weir-collector" --nodes 1 --interval 15s --churn 0 --duration "$DURATION" \
    ${COLLECTOR_MEMORY_LIMIT:+--collector-memory-limit "$COLLECTOR_MEMORY_LIMIT"} \
    --json "$OUT/collector-rss.json"
  ;;&
all | pipeline-peers)
  # Issue 7: total CPU per sample of every Weir process versus vmagent and
  # Prometheus's agent, on identical fleets in the same run.
  weir loadtest --mode all --nodes "${PEER_NODES:-3}" --interval 1s --duration "$DURATION" \
    --peer vmagent --peer prometheus-agent --json "$OUT/pipeline-peers.json"
  ;;&
all | pipeline-rate)
  # Issue 7: the highest rate the pipeline sustains alone, with no loss:
  # 36 nodes offer about 307,000 samples/s. RATE_NODES=18 is half of it,
  # where the p99 after warm-up is read; RATE_CHURN=20 replaces every pod
  # every 20 s.
  weir loadtest --mode all --nodes "${RATE_NODES:-36}" --churn "${RATE_CHURN:-0}" --interval 1s --duration "$DURATION" \
    --json "$OUT/pipeline-rate.json"
  ;;
esac
