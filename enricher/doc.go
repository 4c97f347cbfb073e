// Package enricher is the second stage of Weir: it reads every scrape from
// the WEIR_RAW stream (weir.raw.<cluster>.<node>.<source>.<partition>) and
// publishes it to weir.enriched.<cluster>.<node>.<source> with labels that
// say where each series comes from.
//
// # Labels
//
//   - cluster and node, from the subject, which the collector's NATS
//     credentials fix; never from the payload. As Prometheus does with
//     honor_labels false, a scraped label with the name of an added one is
//     kept as exported_<name> (exported_exported_<name> if that is taken).
//   - The node's labels named by node_labels, renamed: by default zone,
//     region, instance_type and nodegroup (EKS, eksctl or GKE node pools).
//   - For a series with namespace and pod labels (pod_name before
//     Kubernetes 1.16): the pod's labels named by pod_labels, and
//     workload_kind and workload: the Deployment of the pod's ReplicaSet,
//     the CronJob of its Job, its StatefulSet or DaemonSet, or any other
//     controller as itself. A pod without a controller is its own
//     workload, kind Pod. A ReplicaSet or Job not in the cache yet is
//     reported as itself.
//   - Then the optional relabel_configs, with Prometheus'
//     metric_relabel_configs semantics.
//
// A series whose pod is not in the cache (not listed yet, or deleted) passes
// with the cluster and node labels and is counted in
// weir_enricher_series_pod_unknown_total. The clusters watched are those
// of Config.Clusters (a kubeconfig each, or in-cluster) and, when the
// enricher runs in a pod, its own cluster (Config.LocalInCluster). A
// cluster without credentials gets only cluster and node.
//
// # Metadata
//
// One metadata-only informer (k8s.io/client-go/metadata) per resource and
// cluster (nodes, pods, replicasets, jobs), shared by every worker. A
// transform keeps only the name, namespace, resource version, allowlisted
// labels and the controller reference of each object, so the cache of a
// large cluster stays small (see BENCHMARKS.md). The enricher never waits
// for the API server: it consumes from the start, and /readyz waits for the
// first lists at most sync_timeout.
//
// # Cardinality guard
//
// Each scrape target (cluster, node, source) may start at most
// cardinality.new_series_per_minute new series a minute; beyond that its
// new series are dropped and counted in
// weir_enricher_series_dropped_total{reason="cardinality"}, while the
// series it already has keep flowing. The guard remembers a 64-bit hash of
// each series and forgets those absent for forget_after; max_series bounds
// it across all targets.
//
// # Steady targets
//
// A target mostly sends the same series scrape after scrape. For a
// BlockZstd payload whose labels frame is the one of a payload the target
// (and chunk) sent before, the enricher reuses the compressed labels of
// that output, as long as nothing the output
// depended on changed: no node, pod, ReplicaSet or Job its join looked up
// (found or not) changed since, as the informers report changes, and the
// cardinality guard still knows every series of it, none of which it had
// dropped. Neither frame is decompressed, but for the input's samples to be
// counted, and when every series is kept the input's samples frame is
// copied as it is. The output is byte for byte the one the full path makes; the
// reuse is counted in weir_enricher_messages_reused_total.
//
// When pods came and went, the target's series are mostly those of its
// last payload: the series the two share keep what the join, the relabel
// rules and the guard made of them last time, and only the others are
// read, joined and guarded, on the same conditions. The output is again
// the full path's, byte for byte; the series reused are counted in
// weir_enricher_series_reused_total. After 16 such outputs in a row, the
// next is made by the full path, which forgets the pods gone since. The outputs
// kept are bounded in total and dropped after ten minutes unused.
//
// # Guarantees
//
//   - At least once: a message is acknowledged only after JetStream
//     acknowledged its enriched copy, which keeps the Nats-Msg-Id and other
//     headers of the input, so a replay is dropped as a duplicate. Should
//     the enriched scrape outgrow the server's max_payload, it is split and
//     the extra parts get ids "<id>.part<n>".
//   - Per-series order: each partition of WEIR_RAW is read by one worker,
//     one message at a time. When it stops, it nacks its current message
//     and the ones the client library buffered, in stream order.
//   - Bad input is set aside: a message that cannot be decoded goes to
//     weir.dead.enricher with the error in Weir-Error and its subject in
//     Weir-Subject, and is acknowledged once stored.
package enricher
