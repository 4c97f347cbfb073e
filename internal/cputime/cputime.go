// Package cputime measures the CPU time of the process, for benchmarks on
// a shared machine: unlike wall time, it moves little with the load of
// other processes.
package cputime

import (
	"syscall"
	"testing"
	"time"
)

// Process is the CPU time (user and system) the process has used so far.
func Process() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Report reports the process CPU time since since per sample, for b.N
// operations of samples samples each, as cpu-ns/sample.
func Report(b *testing.B, since time.Duration, samples int) {
	b.ReportMetric(float64(Process()-since)/float64(b.N)/float64(samples), "cpu-ns/sample")
}
