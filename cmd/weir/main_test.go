package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{c.name, "--help"}, &stdout, &stderr); code != 0 {
				t.Fatalf("weir %s --help exited %d: %s", c.name, code, stderr.String())
			}
			if !strings.Contains(stderr.String(), "Usage of weir "+c.name) {
				t.Fatalf("weir %s --help printed %q", c.name, stderr.String())
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
	for _, c := range commands {
		if !strings.Contains(stderr.String(), c.name) {
			t.Errorf("usage does not list %s:\n%s", c.name, stderr.String())
		}
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "weir ") {
		t.Errorf("weir version exited %d and printed %q", code, stdout.String())
	}
}

func TestCollectorRefusesBadConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	path := t.TempDir() + "/weir.yaml"
	if err := os.WriteFile(path, []byte("collector:\n  targets:\n    - url: http://k:10250/metrics\n      source: sundial\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code := run(context.Background(), []string{"collector", "--config", path, "--node", "n"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "sundial") {
		t.Fatalf("exit %d, stderr %q: want 1 and an error naming the bad source", code, stderr.String())
	}
}

// TestDemo runs the quick-start demo, short: it must drain and lose nothing.
func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"demo", "--duration", "6s", "--interval", "1s", "--report", "2s", "--nodes", "2", "--listen", "127.0.0.1:0"}, &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	if !strings.Contains(out, "nothing lost") || !strings.Contains(out, "scrapes=") {
		t.Fatalf("demo printed no final account:\n%s", out)
	}
	if strings.Contains(out, "published=0 ") {
		t.Fatalf("demo published nothing:\n%s", out)
	}
}
