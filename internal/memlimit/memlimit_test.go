package memlimit

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// isolate gives Set a fake cgroup tree holding memoryMax ("" for no
// memory.max file), no GOMEMLIMIT, and restores the runtime's limit.
func isolate(t *testing.T, memoryMax string) {
	t.Helper()
	root := t.TempDir()
	cg := filepath.Join(root, "proc-self-cgroup")
	if err := os.WriteFile(cg, []byte("0::/kubepods/pod1/weir\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "kubepods", "pod1", "weir")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if memoryMax != "" {
		if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(memoryMax+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oldCgroup, oldRoot := procSelfCgroup, cgroupRoot
	procSelfCgroup, cgroupRoot = cg, root
	env, hadEnv := os.LookupEnv("GOMEMLIMIT")
	os.Unsetenv("GOMEMLIMIT")
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		procSelfCgroup, cgroupRoot = oldCgroup, oldRoot
		if hadEnv {
			os.Setenv("GOMEMLIMIT", env)
		}
		debug.SetMemoryLimit(before)
	})
}

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured int64
		memoryMax  string
		env        string
		want       int64
		from       string
	}{
		{"config wins over the cgroup", 24 << 20, "201326592", "", 24 << 20, FromConfig},
		{"cgroup limit", 0, "201326592", "", 181193932, FromCgroup}, // 0.9 × 192MiB
		{"cgroup without limit", 0, "max", "", math.MaxInt64, FromNone},
		{"no cgroup v2", 0, "", "", math.MaxInt64, FromNone},
		{"GOMEMLIMIT wins", 24 << 20, "201326592", "100MiB", math.MaxInt64, FromEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t, tc.memoryMax)
			debug.SetMemoryLimit(math.MaxInt64)
			if tc.env != "" {
				// The runtime read GOMEMLIMIT when the process started; set
				// now, it is only seen by Set, which must leave the limit be.
				t.Setenv("GOMEMLIMIT", tc.env)
			}
			limit, from := Set(tc.configured)
			if limit != tc.want || from != tc.from {
				t.Fatalf("Set(%d) = %d from %s, want %d from %s", tc.configured, limit, from, tc.want, tc.from)
			}
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Fatalf("runtime limit %d after Set, want %d", got, tc.want)
			}
		})
	}
}

func TestSetGCPercent(t *testing.T) {
	env, hadEnv := os.LookupEnv("GOGC")
	before := debug.SetGCPercent(100)
	t.Cleanup(func() {
		debug.SetGCPercent(before)
		if hadEnv {
			os.Setenv("GOGC", env)
		}
	})

	os.Unsetenv("GOGC")
	if got, from := SetGCPercent(50); got != 50 || from != FromDefault {
		t.Errorf("without GOGC: %d from %s, want 50 from %s", got, from, FromDefault)
	}
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("runtime GOGC %d after SetGCPercent(50), want 50", got)
	}

	// The runtime read GOGC when the process started: SetGCPercent must
	// leave what it set, here 80, and say so.
	debug.SetGCPercent(80)
	t.Setenv("GOGC", "80")
	if got, from := SetGCPercent(50); got != 80 || from != FromEnv {
		t.Errorf("with GOGC=80: %d from %s, want 80 from %s", got, from, FromEnv)
	}
	if got := debug.SetGCPercent(100); got != 80 {
		t.Errorf("runtime GOGC %d with GOGC in the environment, want 80 left alone", got)
	}
}

func TestDescribe(t *testing.T) {
	if got := Describe(math.MaxInt64); got != "none" {
		t.Errorf("Describe(MaxInt64) = %q", got)
	}
	if got := Describe(24 << 20); got != "24.0MiB" {
		t.Errorf("Describe(24MiB) = %q", got)
	}
}
