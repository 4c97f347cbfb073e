// Package router is the stage between the enricher and the sinks. It reads
// WEIR_ENRICHED (weir.enriched.<cluster>.<node>.<source>) and, for each
// configured route, publishes the series the route keeps to the route's
// own stream, WEIR_ROUTE_<ROUTE> (weir.route.<route>.<cluster>.<node>.<source>),
// from which one sink remote-writes them to one backend.
//
// A route keeps a series when (1) it matches one of the route's selectors
// (PromQL series selectors, OR-ed, as Prometheus' match[] parameters of
// federation and the series API are; no selector matches everything),
// (2) the route's expr-lang predicate, if any, returns true, and (3) the
// route's write_relabel_configs do not drop it. Relabeling runs last, on
// what the selectors and the predicate kept, and rewrites the labels the
// route publishes, exactly as Prometheus' remote_write does.
//
// Guarantees:
//
//   - At least once. An input message is acknowledged only after JetStream
//     acknowledged the output of every route (a route that keeps nothing
//     publishes nothing). A publish that fails is retried, for every route
//     that has not acknowledged yet, until it succeeds or the router stops;
//     the message keeps its Nats-Msg-Id in every route's stream, so a
//     retry or a replay after a crash is dropped as a duplicate.
//   - Per-series order. Each partition of WEIR_ENRICHED (every scrape of a
//     target is in the same one) is processed by one goroutine of one
//     replica at a time, one message after the other, so a target's scrapes
//     reach every route stream in the order they were scraped. Replicas
//     split the partitions among themselves (internal/partition); one that
//     stops finishes the messages it holds, for at most publish_timeout,
//     before another takes its partitions over.
//   - Isolation. Every route has its own stream with its own retention
//     (max_age, max_bytes), so a backend that is away for hours keeps its
//     data without holding up the other routes' sinks.
//   - Bad input is set aside. A message that cannot be decoded is
//     published to weir.dead.router with the error in the Weir-Error header
//     and acknowledged once JetStream stored it.
package router
