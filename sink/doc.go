// Package sink is the last stage of Weir: it reads one route's stream
// (WEIR_ROUTE_<ROUTE>, or WEIR_RAW/WEIR_ENRICHED in a pipeline without a
// router) and remote-writes it to one backend, so that a backend that is
// slow or down only holds up its own route: every route has its own
// stream, consumer, shards, connections and retries.
//
// A sink is configured as a Prometheus remote_write entry (url,
// remote_timeout, headers, basic_auth, authorization, bearer_token(_file),
// oauth2, tls_config, proxy_url, protobuf_message, queue_config), so an
// existing block can be pasted in. The HTTP client is built by
// github.com/prometheus/common/config, which reads secret and TLS files
// again when they change. write_relabel_configs is refused with a pointer
// to the router, which relabels each route once for all its sinks.
//
// It speaks remote write 1.0 (prometheus.WriteRequest) and 2.0
// (io.prometheus.write.v2.Request: symbol table, label references), both
// snappy-compressed. A 2.0 sink whose backend answers 415, or answers 2xx
// without the X-Prometheus-Remote-Write-Samples-Written header (a 1.0
// receiver such as Prometheus 2.42 reads the 2.0 message as an empty one
// and stores nothing), logs once, counts
// weir_sink_protocol_fallbacks_total, sends the same request again as 1.0
// and stays on 1.0. The X-Prometheus-Remote-Write-*-Written answer
// headers of a 2.0 backend are checked: samples it says it did not write
// are counted as failed (reason partial_write).
//
// Guarantees:
//
//   - At least once. A message is acknowledged only after the backend
//     answered 2xx for all its samples, or after it was dead-lettered.
//     Network errors, timeouts, 5xx and 429 (retry_on_http_429) are
//     retried without limit, with capped exponential backoff or the
//     backend's Retry-After; while it waits the sink keeps telling the
//     server the message is in progress, so it is not redelivered. On
//     shutdown, or when a partition moves to another replica, the shards
//     get min(ack_wait/2, 5s) to finish what they hold; what is still not
//     finished is nacked in stream order (the last nak confirmed by the
//     server), so the next consumer gets it first. Pulls are whole fetch
//     batches, read to their end, so no delivered message goes unseen. A
//     restart may send samples twice; it never loses one.
//   - Per-series order. The subject of a message names one target; every
//     message of a subject goes to the same shard, which sends strictly in
//     order and does not move on before the backend took the message. The
//     shard count moves between min_shards and max_shards with how busy the
//     shards are and how long the consumer waited on full shard queues
//     (not while requests are being retried); a change waits
//     until every shard is idle, so a target's scrapes never overtake each
//     other across it. Several replicas share a route through Deps.Consume
//     (internal/partition): each works on its own partitions, and a target
//     always falls in the same partition.
//   - Bounded memory. Each shard has a short queue (queue_config.capacity
//     samples, at most 16 messages); a full queue stops the consumer loop
//     instead of growing, and the consumer's max_ack_pending bounds what
//     the server hands out. The labels of each target's last BlockZstd
//     payload, kept so that a target sending the same series again is sent
//     without reading them, are bounded to 128 MiB per sink and dropped
//     within minutes of the target's last message.
//   - Bad input is set aside. A message that cannot be decoded (bad
//     subject, headers, encoding or payload), and a message with samples
//     the backend rejected for good (a 4xx other than 429, or 415 to 1.0),
//     is published to weir.dead.sink with the error in the Weir-Error
//     header and its subject in Weir-Subject, and acknowledged once
//     JetStream stored it; the other requests of that message are still
//     sent.
//
// Metrics, each with sink and route labels: weir_sink_samples_sent_total,
// _samples_failed_total{reason}, _samples_retried_total,
// _samples_dropped_total{reason}, _pending_messages,
// _highest_sent_timestamp_seconds, _lag_messages, _lag_seconds,
// _request_duration_seconds, _requests_total{code}, _shards,
// _shards_desired, _messages_acked_total, _messages_dead_total{reason},
// _protocol_fallbacks_total.
package sink
