// Package rules embeds Weir's default alert rule pack, so that a program
// (the load test, the demo) can run the alerter with it wherever it is.
package rules

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

//go:embed *.yaml
var pack embed.FS

// Write copies the rule files of the pack, without their tests, into dir
// and returns a glob of them for rule_files.
func Write(dir string) (string, error) {
	files, err := fs.Glob(pack, "*.yaml")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.yaml") {
			continue
		}
		data, err := pack.ReadFile(name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "*.yaml"), nil
}
