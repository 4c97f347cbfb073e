package rules

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteCopiesTheRulesWithoutTheirTests(t *testing.T) {
	dir := t.TempDir()
	glob, err := Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	written, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	want, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(p string) bool { return strings.HasSuffix(p, "_test.yaml") })
	if len(written) != len(want) {
		t.Fatalf("wrote %v, want the %d rule files %v", written, len(want), want)
	}
	for _, name := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(src) {
			t.Errorf("%s differs from the pack", name)
		}
	}
}
