// Package memlimit sets the Go runtime's soft memory limit of a process
// (runtime/debug.SetMemoryLimit, what GOMEMLIMIT sets): the garbage
// collector then works harder as the process nears the limit, instead of
// letting the heap grow to twice what is live, as GOGC=100 alone does.
// The limit is soft: a process that needs more gets more, at the cost of
// more collections (at most half its CPU, the runtime's own bound).
package memlimit

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
)

// CgroupRatio is the share of the container's memory limit the soft limit
// defaults to, as Prometheus's --auto-gomemlimit.ratio: the rest is for
// what the Go runtime does not count, chiefly the pages of the binary.
const CgroupRatio = 0.9

// Where a limit came from.
const (
	FromEnv    = "GOMEMLIMIT"
	FromConfig = "config"
	FromCgroup = "cgroup"
	FromNone   = "none"
	// FromDefault is a GC percent the process chose.
	FromDefault = "default"
)

// Files the cgroup (v2) memory limit is read from.
var (
	procSelfCgroup = "/proc/self/cgroup"
	cgroupRoot     = "/sys/fs/cgroup"
)

// Set applies the soft memory limit and returns it, in bytes
// (math.MaxInt64 for none), with where it came from. GOMEMLIMIT in the
// environment wins: the runtime applied it already, and it is the
// operator's word. Otherwise configured, when positive; otherwise
// CgroupRatio of the memory limit of the process's cgroup, when it has one.
func Set(configured int64) (limit int64, from string) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return debug.SetMemoryLimit(-1), FromEnv
	}
	switch {
	case configured > 0:
		limit, from = configured, FromConfig
	default:
		max, ok := cgroupLimit()
		if !ok {
			return debug.SetMemoryLimit(-1), FromNone
		}
		limit, from = int64(float64(max)*CgroupRatio), FromCgroup
	}
	debug.SetMemoryLimit(limit)
	return limit, from
}

// cgroupLimit returns memory.max of the process's cgroup v2. Kubernetes
// 1.35 runs on cgroup v2 only; in a container the cgroup namespace makes
// the path "/".
func cgroupLimit() (int64, bool) {
	b, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::")
		if !ok {
			continue
		}
		max, err := os.ReadFile(filepath.Join(cgroupRoot, path, "memory.max"))
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(max)), 10, 64)
		if err != nil || n <= 0 { // "max": no limit
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// SetGCPercent sets the garbage collector's GOGC to percent, unless GOGC
// is in the environment, and returns the one in effect with where it came
// from, as Prometheus does for its own default of 75. The heap of a
// process grows to (1 + GOGC/100) times what is live before a collection,
// and the runtime keeps about that much from the system.
func SetGCPercent(percent int) (int, string) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		m := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(m)
		return int(m[0].Value.Uint64()), FromEnv
	}
	debug.SetGCPercent(percent)
	return percent, FromDefault
}

// Describe writes a limit for a log line: "none" or bytes in MiB.
func Describe(limit int64) string {
	if limit == math.MaxInt64 {
		return "none"
	}
	return fmt.Sprintf("%.1fMiB", float64(limit)/(1<<20))
}
