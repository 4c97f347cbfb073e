// Package summary turns the kubelet's /stats/summary JSON into metrics
// whose names and labels are those users know from cAdvisor
// (/metrics/cadvisor) and metrics-server (/metrics/resource), so that the
// same dashboards and alert rules work on either source.
//
// Every sample carries the "time" of the statistic it comes from (the
// kubelet's own sampling time), not the scrape time; start times carry
// none and get the scrape time. A field the kubelet leaves out (Windows has
// no rssBytes, kubelets before 1.33 no PSI) gives no sample, never a zero.
// Labels with an empty value are left out, as Prometheus does. The node
// is not a label: it travels in the subject, like every source's.
//
// # Mapping
//
// Units: CPU nanoseconds become seconds, nanocores cores, PSI
// microseconds seconds; bytes stay bytes.
//
//	summary field                              metric                                                labels
//	node.startTime                             node_start_time_seconds
//	node.cpu.usageCoreNanoSeconds              node_cpu_usage_seconds_total
//	node.cpu.usageNanoCores                    node_cpu_usage_cores
//	node.memory.workingSetBytes                node_memory_working_set_bytes
//	node.memory.{usage,available,rss}Bytes     node_memory_{usage,available,rss}_bytes
//	node.memory.{pageFaults,majorPageFaults}   node_memory_{page_faults,major_page_faults}_total
//	node.{cpu,memory,io}.psi.some.total        node_pressure_{cpu,memory,io}_waiting_seconds_total
//	node.{cpu,memory,io}.psi.full.total        node_pressure_{cpu,memory,io}_stalled_seconds_total
//	node.network.interfaces[]                  node_network_{receive,transmit}_{bytes,errors}_total  interface
//	node.fs                                    node_fs_{capacity,available,used}_bytes,             filesystem="nodefs"
//	                                           node_fs_inodes, node_fs_inodes_{free,used}
//	node.runtime.imageFs                       node_fs_* as above                                    filesystem="imagefs"
//	node.runtime.containerFs (if not imageFs)  node_fs_* as above                                    filesystem="containerfs"
//	node.rlimit.{maxpid,curproc}               node_processes_limit, node_processes
//	node.swap.swap{Available,Usage}Bytes       node_swap_{available,usage}_bytes
//	node.systemContainers[].cpu, .memory       system_container_cpu_usage_seconds_total,            system_container
//	                                           system_container_memory_* as for the node
//	pods[].startTime                           pod_start_time_seconds                                namespace, pod
//	pods[].cpu, .memory, .io                   pod_cpu_usage_seconds_total, pod_cpu_usage_cores,     namespace, pod
//	                                           pod_memory_* and pod_pressure_* as for the node
//	pods[].network.interfaces[]                container_network_{receive,transmit}_{bytes,errors}_total  namespace, pod, interface
//	pods[].ephemeral-storage                   pod_ephemeral_storage_{capacity,available,used}_bytes,  namespace, pod
//	                                           pod_ephemeral_storage_inodes{,_free,_used}
//	pods[].volume[]                            pod_volume_{capacity,available,used}_bytes,           namespace, pod, volume
//	                                           pod_volume_inodes{,_free,_used}
//	pods[].process_stats.process_count         pod_processes                                         namespace, pod
//	pods[].swap.swapUsageBytes                 pod_swap_usage_bytes                                  namespace, pod
//	pods[].containers[].startTime              container_start_time_seconds                          namespace, pod, container
//	pods[].containers[].cpu                    container_cpu_usage_seconds_total,                   namespace, pod, container
//	                                           container_cpu_usage_cores
//	pods[].containers[].memory                 container_memory_working_set_bytes,                  namespace, pod, container
//	                                           container_memory_usage_bytes, container_memory_rss,
//	                                           container_memory_available_bytes
//	pods[].containers[].memory.pageFaults      container_memory_failures_total                       ..., failure_type="pgfault", scope="container"
//	pods[].containers[].memory.majorPageFaults container_memory_failures_total                       ..., failure_type="pgmajfault", scope="container"
//	pods[].containers[].{cpu,memory,io}.psi    container_pressure_{cpu,memory,io}_{waiting,stalled}_seconds_total
//	pods[].containers[].rootfs                 container_fs_usage_bytes, container_fs_limit_bytes,  namespace, pod, container
//	                                           container_fs_available_bytes, container_fs_inodes_{total,free,used}
//	pods[].containers[].logs                   container_logs_{capacity,available,used}_bytes,      namespace, pod, container
//	                                           container_logs_inodes{,_free,_used}
//	pods[].containers[].swap.swapUsageBytes    container_swap_usage_bytes                            namespace, pod, container
//
// The names shared with /metrics/resource (node_, pod_ and
// container_cpu_usage_seconds_total, *_memory_working_set_bytes,
// *_swap_usage_bytes, container_start_time_seconds) mean the same there;
// the shared cAdvisor names too, except that cAdvisor's container_fs_*
// carry a device label and its network series a container="POD" or empty
// one. node_fs_available_bytes / node_fs_capacity_bytes is what a "node
// filesystem almost full" rule divides.
package summary
