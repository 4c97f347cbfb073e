// Package sink is the last stage of Weir: it reads one stream of scrapes
// (a route, or WEIR_RAW when there is no router) through a durable pull
// consumer named "sink-<name>", and remote-writes it to one backend with
// the Prometheus remote-write 1.0 protocol.
//
// Guarantees:
//
//   - At least once. A message is acknowledged only after the backend
//     answered 2xx for all its samples, or rejected them for good with a
//     status other than 429 and 5xx (those samples are counted as dropped
//     and logged). Network errors, timeouts, 5xx and 429 are retried
//     without limit, with capped exponential backoff or the backend's
//     Retry-After; while it waits the sink keeps telling the server the
//     message is in progress, so it is not redelivered. On shutdown the
//     messages not finished are nacked in stream order, so the next
//     consumer gets them at once. A restart may send samples twice; it
//     never loses one.
//   - Per-series order. The subject of a message names one target; every
//     message of a subject goes to the same shard, which sends strictly in
//     order and does not move on before the backend took the message.
//   - Bounded memory. Each shard has a short queue; a full queue stops the
//     consumer loop instead of growing, and the consumer's max_ack_pending
//     bounds what the server hands out.
//   - Bad input is set aside. A message that cannot be decoded (bad
//     subject, headers, encoding or payload) is published to
//     weir.dead.sink with the error in the Weir-Error header and its
//     subject in Weir-Subject, and acknowledged once JetStream stored it.
package sink
