package summary

import (
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// Sample is one metric sample converted from a summary.
type Sample struct {
	// Labels hold the metric name and the labels of the table in doc.go,
	// sorted; labels with an empty value are left out.
	Labels labels.Labels
	Value  float64
	// TimestampMs is the "time" of the statistic the value comes from, in
	// Unix milliseconds, or 0 when the statistic has none (start times);
	// the caller then uses the scrape time.
	TimestampMs int64
}

// Units the summary reports in.
const (
	nanosPerSecond  = 1e9
	microsPerSecond = 1e6
)

// Filesystem label values, the names the kubelet's eviction settings use.
const (
	fsNode      = "nodefs"
	fsImage     = "imagefs"
	fsContainer = "containerfs"
)

// Append appends the metrics of s to dst, in a stable order, and returns
// the extended slice.
func (s *Summary) Append(dst []Sample) []Sample {
	e := emitter{dst: dst}
	n := &s.Node
	e.startTime("node_start_time_seconds", n.StartTime)
	e.cpu("node", n.CPU)
	e.memory("node", n.Memory, false)
	e.io("node", n.IO)
	e.network("node", n.Network)
	e.fs("node_fs", n.Fs, "filesystem", fsNode)
	if n.Runtime != nil {
		e.fs("node_fs", n.Runtime.ImageFs, "filesystem", fsImage)
		// containerfs is the imagefs again unless the runtime splits them;
		// a second copy of the same series would be a duplicate.
		if n.Runtime.ContainerFs != nil && !sameFs(n.Runtime.ImageFs, n.Runtime.ContainerFs) {
			e.fs("node_fs", n.Runtime.ContainerFs, "filesystem", fsContainer)
		}
	}
	if r := n.Rlimit; r != nil {
		e.int("node_processes_limit", r.Time, r.MaxPID)
		e.int("node_processes", r.Time, r.CurProc)
	}
	if sw := n.Swap; sw != nil {
		e.add("node_swap_available_bytes", sw.Time, sw.SwapAvailableBytes, 1)
		e.add("node_swap_usage_bytes", sw.Time, sw.SwapUsageBytes, 1)
	}
	for i := range n.SystemContainers {
		c := &n.SystemContainers[i]
		e.labels = append(e.labels[:0], "system_container", c.Name)
		e.cpu("system_container", c.CPU)
		e.memory("system_container", c.Memory, false)
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		e.labels = append(e.labels[:0], "namespace", p.PodRef.Namespace, "pod", p.PodRef.Name)
		e.startTime("pod_start_time_seconds", p.StartTime)
		e.cpu("pod", p.CPU)
		e.memory("pod", p.Memory, false)
		e.io("pod", p.IO)
		// cAdvisor reports network counters on the pod sandbox, without a
		// container, under container_network_*: the names users graph.
		e.network("container", p.Network)
		e.fs("pod_ephemeral_storage", p.EphemeralStorage)
		if ps := p.ProcessStats; ps != nil {
			e.add("pod_processes", time.Time{}, ps.ProcessCount, 1)
		}
		if sw := p.Swap; sw != nil {
			e.add("pod_swap_usage_bytes", sw.Time, sw.SwapUsageBytes, 1)
		}
		for j := range p.Volumes {
			v := &p.Volumes[j]
			e.fs("pod_volume", &v.FsStats, "volume", v.Name)
		}
		podLabels := len(e.labels)
		for j := range p.Containers {
			c := &p.Containers[j]
			e.labels = append(e.labels[:podLabels], "container", c.Name)
			e.startTime("container_start_time_seconds", c.StartTime)
			e.cpu("container", c.CPU)
			e.memory("container", c.Memory, true)
			e.io("container", c.IO)
			e.fs("container_fs", c.Rootfs)
			e.fs("container_logs", c.Logs)
			if sw := c.Swap; sw != nil {
				e.add("container_swap_usage_bytes", sw.Time, sw.SwapUsageBytes, 1)
			}
		}
	}
	return e.dst
}

// emitter builds samples; labels holds the name/value pairs of the object
// being converted (namespace, pod, container ...).
type emitter struct {
	dst    []Sample
	labels []string
	b      labels.ScratchBuilder
}

// add appends name{labels, extra} = *v * scale at t. A nil v is a field the
// kubelet left out: no sample.
func (e *emitter) add(name string, t time.Time, v *uint64, scale float64, extra ...string) {
	if v == nil {
		return
	}
	e.addFloat(name, t, float64(*v)*scale, extra...)
}

func (e *emitter) int(name string, t time.Time, v *int64) {
	if v == nil {
		return
	}
	e.addFloat(name, t, float64(*v))
}

func (e *emitter) addFloat(name string, t time.Time, v float64, extra ...string) {
	e.b.Reset()
	e.b.Add(labels.MetricName, name)
	for _, pairs := range [2][]string{e.labels, extra} {
		for i := 0; i+1 < len(pairs); i += 2 {
			if pairs[i+1] != "" {
				e.b.Add(pairs[i], pairs[i+1])
			}
		}
	}
	e.b.Sort()
	var ms int64
	if !t.IsZero() {
		ms = t.UnixMilli()
	}
	e.dst = append(e.dst, Sample{Labels: e.b.Labels(), Value: v, TimestampMs: ms})
}

func (e *emitter) startTime(name string, t time.Time) {
	if t.IsZero() {
		return
	}
	e.addFloat(name, time.Time{}, float64(t.UnixNano())/nanosPerSecond)
}

func (e *emitter) cpu(prefix string, c *CPUStats) {
	if c == nil {
		return
	}
	e.add(prefix+"_cpu_usage_seconds_total", c.Time, c.UsageCoreNanoSeconds, 1/nanosPerSecond)
	e.add(prefix+"_cpu_usage_cores", c.Time, c.UsageNanoCores, 1/nanosPerSecond)
	e.psi(prefix, "cpu", c.PSI, c.Time)
}

// memory converts memory statistics. Containers use cAdvisor's names
// (container_memory_rss, container_memory_failures_total); the node and
// pods the _bytes names of /metrics/resource.
func (e *emitter) memory(prefix string, m *MemoryStats, cadvisorNames bool) {
	if m == nil {
		return
	}
	e.add(prefix+"_memory_working_set_bytes", m.Time, m.WorkingSetBytes, 1)
	e.add(prefix+"_memory_usage_bytes", m.Time, m.UsageBytes, 1)
	e.add(prefix+"_memory_available_bytes", m.Time, m.AvailableBytes, 1)
	if cadvisorNames {
		e.add(prefix+"_memory_rss", m.Time, m.RSSBytes, 1)
		e.add(prefix+"_memory_failures_total", m.Time, m.PageFaults, 1, "failure_type", "pgfault", "scope", "container")
		e.add(prefix+"_memory_failures_total", m.Time, m.MajorPageFaults, 1, "failure_type", "pgmajfault", "scope", "container")
	} else {
		e.add(prefix+"_memory_rss_bytes", m.Time, m.RSSBytes, 1)
		e.add(prefix+"_memory_page_faults_total", m.Time, m.PageFaults, 1)
		e.add(prefix+"_memory_major_page_faults_total", m.Time, m.MajorPageFaults, 1)
	}
	e.psi(prefix, "memory", m.PSI, m.Time)
}

// psi converts pressure totals, in microseconds, to cAdvisor's
// <prefix>_pressure_<resource>_{waiting,stalled}_seconds_total.
func (e *emitter) psi(prefix, resource string, p *PSIStats, at time.Time) {
	if p == nil {
		return
	}
	base := prefix + "_pressure_" + resource
	if p.Some != nil {
		e.add(base+"_waiting_seconds_total", at, p.Some.Total, 1/microsPerSecond)
	}
	if p.Full != nil {
		e.add(base+"_stalled_seconds_total", at, p.Full.Total, 1/microsPerSecond)
	}
}

func (e *emitter) io(prefix string, s *IOStats) {
	if s != nil {
		e.psi(prefix, "io", s.PSI, s.Time)
	}
}

func (e *emitter) network(prefix string, n *NetworkStats) {
	if n == nil {
		return
	}
	ifaces := n.Interfaces
	if len(ifaces) == 0 && n.Name != "" {
		ifaces = []InterfaceStats{n.InterfaceStats}
	}
	for i := range ifaces {
		in := &ifaces[i]
		if in.Name == "" {
			continue
		}
		e.add(prefix+"_network_receive_bytes_total", n.Time, in.RxBytes, 1, "interface", in.Name)
		e.add(prefix+"_network_receive_errors_total", n.Time, in.RxErrors, 1, "interface", in.Name)
		e.add(prefix+"_network_transmit_bytes_total", n.Time, in.TxBytes, 1, "interface", in.Name)
		e.add(prefix+"_network_transmit_errors_total", n.Time, in.TxErrors, 1, "interface", in.Name)
	}
}

// fs converts a filesystem. Containers use cAdvisor's names
// (container_fs_limit_bytes, container_fs_inodes_total); the rest
// <prefix>_{capacity,available,used}_bytes and _inodes{,_free,_used}.
func (e *emitter) fs(prefix string, f *FsStats, extra ...string) {
	if f == nil {
		return
	}
	if prefix == "container_fs" {
		e.add("container_fs_usage_bytes", f.Time, f.UsedBytes, 1, extra...)
		e.add("container_fs_limit_bytes", f.Time, f.CapacityBytes, 1, extra...)
		e.add("container_fs_available_bytes", f.Time, f.AvailableBytes, 1, extra...)
		e.add("container_fs_inodes_total", f.Time, f.Inodes, 1, extra...)
		e.add("container_fs_inodes_free", f.Time, f.InodesFree, 1, extra...)
		e.add("container_fs_inodes_used", f.Time, f.InodesUsed, 1, extra...)
		return
	}
	e.add(prefix+"_capacity_bytes", f.Time, f.CapacityBytes, 1, extra...)
	e.add(prefix+"_available_bytes", f.Time, f.AvailableBytes, 1, extra...)
	e.add(prefix+"_used_bytes", f.Time, f.UsedBytes, 1, extra...)
	e.add(prefix+"_inodes", f.Time, f.Inodes, 1, extra...)
	e.add(prefix+"_inodes_free", f.Time, f.InodesFree, 1, extra...)
	e.add(prefix+"_inodes_used", f.Time, f.InodesUsed, 1, extra...)
}

func sameFs(a, b *FsStats) bool {
	if a == nil || b == nil {
		return false
	}
	eq := func(x, y *uint64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return eq(a.CapacityBytes, b.CapacityBytes) && eq(a.UsedBytes, b.UsedBytes) && eq(a.Inodes, b.Inodes) && eq(a.InodesUsed, b.InodesUsed)
}
