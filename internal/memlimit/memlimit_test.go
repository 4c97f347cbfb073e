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

func TestDescribe(t *testing.T) {
	if got := Describe(math.MaxInt64); got != "none" {
		t.Errorf("Describe(MaxInt64) = %q", got)
	}
	if got := Describe(24 << 20); got != "24.0MiB" {
		t.Errorf("Describe(24MiB) = %q", got)
	}
}
