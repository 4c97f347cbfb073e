package loadtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProc(t *testing.T) {
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseStatCPU(self); err != nil {
		t.Fatalf("/proc/self/stat: %v", err)
	}
	for _, tc := range []struct {
		name, in string
		want     time.Duration
		wantErr  string
	}{
		{"spaces in name", "42 (a b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0", 3 * time.Second, ""},
		{"no name", "42 S 1", 0, "no ')'"},
		{"short", "42 (x) S 1 2 3", 0, "fields"},
		{"overflow", "42 (x) S 1 1 1 0 -1 4194560 100 0 0 0 27700000000000000 50 0", 0, "out of range"},
		{"not a number", "42 (x) S 1 1 1 0 -1 4194560 100 0 0 0 x 50 0", 0, "cpu ticks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1 kB\n", 2 << 20, ""},
		{"VmHWM:\t  4 kB\nRssAnon:\t  3 kB\n", 4 << 10, ""},
		{"Name:\tx\n", 0, "no VmHWM"},
		{"VmHWM:\t2048 MB\n", 0, "want"},
		{"VmHWM:\tx kB\n", 0, "VmHWM"},
	} {
		got, err := parseStatusKB([]byte(tc.in), "VmHWM")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%q: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Fatalf("%q: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestProcUsage runs a real program that burns CPU and memory and checks
// the account: a restarted program adds up over its runs.
func TestProcUsage(t *testing.T) {
	p := &Proc{Name: "burn", Path: weirBin, Args: []string{"version"}}
	for range 2 {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		for p.Running() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	cpu, rss := p.Usage()
	if p.Starts() != 2 || cpu <= 0 || rss < 1<<20 {
		t.Fatalf("starts %d, cpu %v, peak rss %d: want 2 runs with some CPU and at least 1 MiB", p.Starts(), cpu, rss)
	}
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseProc(f *testing.F) {
	for _, name := range []string{"/proc/self/stat", "/proc/self/status"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if d, err := parseStatCPU(in); err == nil && d < 0 {
			t.Fatalf("negative cpu %v from %q", d, in)
		}
		_, _ = parseStatusKB(in, "VmHWM")
	})
}
