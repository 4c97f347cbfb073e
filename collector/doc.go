// Package collector is Weir's node agent, the first stage of the pipeline.
// It runs on every node (a DaemonSet), scrapes the node's kubelet
// (/metrics, /metrics/cadvisor, /metrics/resource, /metrics/probes,
// /stats/summary) and kube-proxy (:10249/metrics, :10256/healthz), and
// publishes each scrape to JetStream, where the enricher reads it from the
// WEIR_RAW stream.
//
// # What it reads
//
// The Prometheus text format (OpenMetrics too, when a target answers with
// it), the kubelet's /stats/summary JSON (turned into cAdvisor and
// metrics-server names by package summary) and kube-proxy's /healthz JSON
// (kubeproxy_healthz_healthy, kubeproxy_healthz_last_updated_age_seconds,
// kubeproxy_healthz_last_updated_timestamp_seconds; a 503 is an unhealthy
// kube-proxy, not a failed scrape), over http or https, with an optional
// bearer token file read again at every scrape and a CA file.
//
// # Where the targets come from
//
// Config.Discovery.Mode: static targets (Config.Targets); node, where the
// collector finds its node from the downward API (Deps.Node, Deps.HostIP)
// and the kubelet port from the Node object (Deps.Nodes); or central, where
// it watches every node and scrapes each through the API server's node
// proxy. Config.Sources turns each source off or gives it its own interval
// and scrape options, for static and discovered targets alike. A discovered
// target that goes away has its loop stopped, and Run waits for it before
// starting any successor, so that an old loop never publishes after a new
// one.
//
// # What it writes
//
// One message per scrape to weir.raw.<cluster>.<node>.<source>, or several
// when the scrape is larger than the message limit (the smaller of
// max_message_bytes and the server's max_payload, less the headers). The
// payload is a proto.Batch in proto.DefaultEncoding (block2+zstd, about
// 5.3 bytes per cAdvisor sample); the headers are
// proto.Meta: a Nats-Msg-Id derived from subject, scrape time and chunk
// index, the encoding, the scrape time, "<chunk>/<chunks>" and the number of
// samples.
//
// Each series is one sample with its labels sorted by name, as a
// Prometheus server with honor_labels false would store it:
//   - the target labels instance (host:port of the URL), job ("kubelet"
//     or "kube-proxy" unless configured) and metrics_path are added; a
//     scraped label of the same name is renamed exported_<name>. Cluster
//     and node are not labels: they are in the subject, and a scraped
//     label named cluster or node stays a plain label;
//   - metric_relabel_configs (Prometheus's relabel package) run next;
//   - labels with an empty value are dropped;
//   - an explicit timestamp, as cAdvisor and /stats/summary set, is kept
//     unless honor_timestamps is false; other samples get the scrape
//     start time;
//   - up, scrape_duration_seconds and scrape_samples_scraped are added with
//     the scrape start time;
//   - a series of the last successful scrape that this one lacks gets a
//     staleness marker (Prometheus's StaleNaN) at the scrape time; a failed
//     scrape marks every series of the last successful one stale, once; a
//     target that discovery drops publishes markers for all its series and
//     its up series.
//
// # Guarantees
//
//   - A scrape is all or nothing: a scrape that fails anywhere (HTTP error,
//     non-2xx status, timeout, body over body_size_limit, any parse error,
//     sample_limit, label_limit, label_name_length_limit or
//     label_value_length_limit exceeded, a series too large for one
//     message) is published as up=0, the two other report series and the
//     staleness markers, never as the part of the body read before the
//     error. The failure is counted by reason and logged with an error
//     naming the limit and the value, at most once a minute while it
//     repeats, and the recovery is logged.
//   - Targets are independent: each has its own loop, connection, limits
//     and buffers, and a slow or failing target delays no other.
//   - Certificates are verified against the configured CA; a failed
//     verification is a failed scrape (reason tls), never a fallback.
//     insecure_skip_verify is an explicit opt-in, warned about by New.
//   - Per-series order: every scrape goes into a buffer (internal/buffer)
//     with one queue per subject, and one sender per subject publishes the
//     oldest scrape and takes the next only once JetStream acked every
//     chunk of it. A target's scrapes reach the stream in scrape order, and
//     a newer scrape never overtakes a buffered one. The sender of a
//     target discovery dropped publishes what it left, staleness markers
//     last, retrying as long as it takes, then ends and its queue goes.
//   - At least once, no duplicates: a scrape not acked within
//     publish_timeout, or refused, or published while the connection is
//     down, goes back to the head of its queue and is retried (100 ms,
//     doubling to 2 s) with the same message ids, so JetStream drops a copy
//     it already stored within its duplicate window. Samples are counted as
//     published once acked as new.
//   - Bounded buffer while NATS is away: scrapes wait in memory up to
//     buffer.max_bytes (16 MiB by default), the one being published
//     included. With buffer.spool_dir set, the oldest scrapes move to files
//     there when memory is full, up to buffer.spool_max_bytes, and at
//     shutdown every waiting scrape is written there; the next collector on
//     the directory publishes them first. Past the limits the OLDEST scrapes
//     are dropped first, counted in weir_collector_buffer_dropped_scrapes_total
//     and ..._dropped_samples_total and logged at most every 10 s;
//     weir_collector_buffer_bytes and weir_collector_buffer_scrapes
//     {where="memory"|"spool"} show what waits. A spool file that does not
//     decode (truncated, damaged) is logged and removed, never fatal. A
//     crash (not a shutdown) loses what was only in memory.
//   - Stopping, the loops stop scraping first; the senders then publish
//     what is still buffered while NATS takes it, for at most 5 s, and
//     what is left goes to the spool (or is lost, logged, without one).
//     Run returns only after every loop and sender has ended.
package collector
