// Package collector is Weir's node agent, the first stage of the pipeline.
// It runs on every node (a DaemonSet), scrapes the node's kubelet
// (/metrics, /metrics/cadvisor, /metrics/resource, /metrics/probes) and
// kube-proxy (:10249/metrics), and publishes each scrape to JetStream, where
// the enricher reads it from the WEIR_RAW stream.
//
// # What it reads
//
// The Prometheus text format (OpenMetrics too, when a target answers with
// it), over http or https, with an optional bearer token file read again at
// every scrape and an optional CA file. /stats/summary is JSON and not
// supported yet.
//
// # What it writes
//
// One message per scrape to weir.raw.<cluster>.<node>.<source>, or several
// when the scrape is larger than the message limit (the smaller of
// max_message_bytes and the server's max_payload, less the headers). The
// payload is a proto.Batch in proto.DefaultEncoding (block1+zstd, about
// 5.5 bytes per cAdvisor sample); the headers are
// proto.Meta: a Nats-Msg-Id derived from subject, scrape time and chunk
// index, the encoding, the scrape time, "<chunk>/<chunks>" and the number of
// samples.
//
// Each series is one sample with its labels sorted by name, as a
// Prometheus server with honor_labels false and honor_timestamps true would
// store it:
//   - the target labels instance (host:port of the URL) and job ("kubelet"
//     or "kube-proxy" unless configured) are added; a scraped label of the
//     same name is renamed exported_<name>;
//   - labels with an empty value are dropped;
//   - an explicit timestamp, as cAdvisor sets, is kept; other samples get
//     the scrape start time;
//   - up, scrape_duration_seconds and scrape_samples_scraped are added with
//     the scrape start time.
//
// # Guarantees
//
//   - A scrape is all or nothing: a scrape that fails anywhere (HTTP error,
//     non-2xx status, timeout, body over 64 MiB, any parse error, a series
//     too large for one message) is published as up=0 and the two other
//     report series alone, never as the part of the body read before the
//     error. The failure is counted by reason and logged, at most once a
//     minute while it repeats, and the recovery is logged.
//   - Targets are independent: each has its own loop, connection and
//     buffers, and a slow or failing target delays no other.
//   - Per-series order: every scrape goes into a buffer (internal/buffer)
//     with one queue per subject, and one sender per subject publishes the
//     oldest scrape and takes the next only once JetStream acked every
//     chunk of it. A target's scrapes reach the stream in scrape order, and
//     a newer scrape never overtakes a buffered one.
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
