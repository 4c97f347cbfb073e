// Package alerter is the stage that evaluates alert rules on the enriched
// stream and notifies Alertmanagers.
//
// Where it sits: it reads WEIR_ENRICHED (weir.enriched.>) with one durable
// consumer (Config.Durable). Aggregations need every series in one
// process, so the consumer has a pinned priority group: the server
// delivers to one alerter of a durable at a time. Other replicas stand by
// without evaluating; when the active one stops (it unpins itself) or
// stops pulling for pinned_ttl, one of them is delivered to, reads the
// alert state the active one left in the key-value bucket, and goes on.
//
// What it keeps: only the samples its rules select. LoadRules reads every
// series(name, matchers...) of every expression before evaluation, and the
// Store keeps, per selected series, a window as long as the widest range a
// rule reads from it plus the evaluation interval. Series no rule selects
// are skipped after reading their metric name; memory grows with the
// selected series, not with all series.
//
// What it writes: every state change of an alert (pending, firing,
// resolved) to weir.alerts.<cluster>.<alertname> in the WEIR_ALERTS stream;
// firing and resolved alerts to every Alertmanager (API v2), re-sent every
// resend_delay while firing; the state of every alert to a JetStream
// key-value bucket, so a restarted alerter keeps the for clock of pending
// alerts and does not notify firing ones twice.
//
// Guarantees: a message is acknowledged once its samples are in the store.
// A rule that fails at run time is marked unhealthy (weir_alerter_rule_health)
// and the others keep running; a rule file that fails to load on reload
// leaves the previous rules running (weir_alerter_config_last_reload_successful).
//
// The rule language is documented in README.md next to this file.
package alerter
