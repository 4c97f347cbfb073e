package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAlertsReadMetricsWeirExports: every weir_ metric the pipeline's
// alerts read is one the code defines, or the alert can never fire.
// Histograms are read through _bucket, _sum and _count.
func TestAlertsReadMetricsWeirExports(t *testing.T) {
	defined := map[string]bool{}
	literal := regexp.MustCompile(`"(weir_[a-z0-9_]+)"`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defined) < 50 {
		t.Fatalf("found %d weir_ metric names in the code; the walk missed the stages", len(defined))
	}
	alerts, err := os.ReadFile("base/common/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	histogram := regexp.MustCompile(`_(bucket|sum|count)$`)
	for _, name := range regexp.MustCompile(`weir_[a-z0-9_]+`).FindAllString(string(alerts), -1) {
		if !defined[name] && !defined[histogram.ReplaceAllString(name, "")] {
			t.Errorf("base/common/alerts.yaml reads %s, which no stage exports", name)
		}
	}
}
