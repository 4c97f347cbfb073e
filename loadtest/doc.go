// Package loadtest runs the Weir pipeline against a simulated fleet and
// accounts for every sample, beside the agents Weir replaces.
//
// A Fleet is N nodes on loopback ports, each serving the real captures of
// a kubelet (/metrics, /metrics/cadvisor, /metrics/resource,
// /metrics/probes) and of kube-proxy, rendered afresh at every scrape:
// values move, explicit timestamps are the moment of serving, and pods are
// replaced by new ones (new series) every few scrapes, or all at once in a
// churn storm. The fleet counts the samples of every scrape it served in
// full: that is what was offered.
//
// A Receiver is a remote-write 1.0 backend that counts every sample by
// series and timestamp in memory bounded by the live series: unique,
// duplicate, out of order (after a newer one of its series), staleness markers,
// and the series the scraper adds itself (up, scrape_*), which no endpoint
// offered. It times each sample from its timestamp to its arrival.
//
// Run starts Weir as real processes of the weir binary with a generated
// configuration file (one `weir all`, or a NATS server and one process per
// stage), and each peer (vmagent, Prometheus in agent mode) on an identical
// fleet of its own with its own receiver; plays a scenario (steady, backend
// outage, NATS restart, SIGKILL of a stage, churn storm); stops the fleets;
// waits for what was offered to arrive; and reports loss, duplicates,
// throughput, latency quantiles, CPU (utime+stime) and peak RSS (VmHWM) of
// every process, and JetStream bytes per sample.
package loadtest
