package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRulesCheckAndTest(t *testing.T) {
	var stdout, stderr bytes.Buffer
	pack, _ := filepath.Glob("../../alerter/rules/*_test.yaml")
	if code := run(context.Background(), append([]string{"rules", "test"}, pack...), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "ok ") {
		t.Fatalf("weir rules test exited %d:\n%s%s", code, stdout.String(), stderr.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	text := "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: series(\"up\", `job=~\"(`) == 0\n"
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"rules", "check", bad}, &stdout, &stderr); code != 1 {
		t.Fatalf("weir rules check of a bad file exited %d, want 1", code)
	}
	if want := bad + ":5:15:"; !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "bad matcher") {
		t.Errorf("stderr %q, want %q and the bad matcher", stderr.String(), want)
	}
}
