package alerter

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestDefaultRulePack runs `weir rules test` on every test file of the
// default pack: each rule fires, then resolves.
func TestDefaultRulePack(t *testing.T) {
	files, err := filepath.Glob("rules/*_test.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("rule tests: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out bytes.Buffer
			if err := TestRules(f, &out); err != nil {
				t.Errorf("%s\n%v", out.String(), err)
			}
		})
	}
}
