package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

const maxTicks = int64(math.MaxInt64 / (time.Second / clockTicks))

// Proc is a program the load test runs and measures: the CPU it used
// (utime+stime) and its peak resident memory (VmHWM), over every time it
// was started, for a stage that is killed and started again.
type Proc struct {
	Name string
	Path string
	Args []string
	Log  io.Writer // stdout and stderr of the program

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	pastCPU time.Duration // CPU of earlier runs
	peakRSS int64         // highest VmHWM seen, bytes
	// anonRSS and fileRSS split the resident set at the last reading while
	// the program ran: its own memory, and the pages of files it mapped
	// (its binary, chiefly).
	anonRSS, fileRSS int64
	lastCPU          time.Duration // last reading of the running program
	starts           int
	exitErrs         []error
}

// Start starts the program.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.Name)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.exited, p.lastCPU = cmd, make(chan struct{}), 0
	p.starts++
	exited := p.exited
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		// The kernel's own account of the whole run, read as the process is reaped.
		if st := cmd.ProcessState; st != nil {
			p.pastCPU += st.UserTime() + st.SystemTime()
			if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
				p.peakRSS = max(p.peakRSS, ru.Maxrss*1024)
			}
		}
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == -1) {
			p.exitErrs = append(p.exitErrs, fmt.Errorf("%s: %w", p.Name, err))
		}
		p.cmd, p.lastCPU = nil, 0
		close(exited)
	}()
	return nil
}

// Running reports whether the program runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Kill ends the program with SIGKILL and waits until it is gone.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL, 0) }

// Stop asks the program to end with SIGTERM and kills it after grace.
func (p *Proc) Stop(grace time.Duration) { p.signal(syscall.SIGTERM, grace) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	p.Sample()
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-exited:
			return
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	<-exited
}

// Sample reads the running program's CPU and peak RSS from /proc.
func (p *Proc) Sample() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	pid := p.cmd.Process.Pid
	if cpu, err := procCPU(pid); err == nil {
		p.lastCPU = cpu
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		if hwm, err := parseStatusKB(b, "VmHWM"); err == nil {
			p.peakRSS = max(p.peakRSS, hwm)
		}
		anon, errAnon := parseStatusKB(b, "RssAnon")
		file, errFile := parseStatusKB(b, "RssFile")
		if errAnon == nil && errFile == nil {
			p.anonRSS, p.fileRSS = anon, file
		}
	}
}

// RSS returns the anonymous and file-backed resident memory at the last
// reading while the program ran.
func (p *Proc) RSS() (anon, file int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.anonRSS, p.fileRSS
}

// Usage returns the CPU used and the peak RSS so far, over every run.
func (p *Proc) Usage() (cpu time.Duration, peakRSS int64) {
	p.Sample()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pastCPU + p.lastCPU, p.peakRSS
}

// Starts returns how many times the program was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Err returns the errors of runs that ended other than by a signal.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.exitErrs...)
}

// procCPU returns utime+stime of a process from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 and 15 (utime, stime) of a stat line. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from its closing parenthesis.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: cpu ticks %q: %w", s, err)
		}
		// A Duration holds 292 years; more CPU than that is a corrupt line.
		if n < 0 || n > maxTicks-ticks {
			return 0, fmt.Errorf("stat: cpu ticks %d out of range", n)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}

// parseStatusKB reads a field in kB of /proc/<pid>/status (VmHWM, the
// peak resident set; RssAnon; RssFile), in bytes.
func parseStatusKB(b []byte, key string) (int64, error) {
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: %s %q: want \"<n> kB\"", key, rest)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: %s: %w", key, err)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("status: no %s line", key)
}
