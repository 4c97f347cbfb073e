package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestRulePackInSync keeps the alerter's rules ConfigMap equal to the
// default rule pack: kustomize reads only files under its own directory, so
// base/central/rules holds a copy of alerter/rules/*.yaml (test files
// aside). Until that pack exists, the only file must be the empty
// placeholder.
func TestRulePackInSync(t *testing.T) {
	const deployRules = "base/central/rules"
	pack, err := filepath.Glob("../alerter/rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pack = slices.DeleteFunc(pack, func(p string) bool { return strings.HasSuffix(p, "_test.yaml") })
	copies, err := filepath.Glob(deployRules + "/*.yaml")
	if err != nil {
		t.Fatal(err)
	}

	var listed []string
	data, err := os.ReadFile("base/central/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	for _, g := range k.ConfigMapGenerator {
		if g.Name == "weir-rules" {
			listed = append(listed, g.Files...)
		}
	}
	var names []string
	for _, c := range copies {
		names = append(names, filepath.Join("rules", filepath.Base(c)))
	}
	slices.Sort(listed)
	if !slices.Equal(listed, names) {
		t.Errorf("weir-rules ConfigMap lists %v, the directory holds %v", listed, names)
	}

	if len(pack) == 0 {
		placeholder, err := os.ReadFile(filepath.Join(deployRules, "default.yaml"))
		if err != nil || len(copies) != 1 || !bytes.Contains(placeholder, []byte("groups: []")) {
			t.Fatalf("no alerter/rules yet, so %s must hold only the empty placeholder default.yaml; has %v", deployRules, copies)
		}
		return
	}
	var want []string
	for _, p := range pack {
		want = append(want, filepath.Join("rules", filepath.Base(p)))
		got, err := os.ReadFile(filepath.Join(deployRules, filepath.Base(p)))
		if err != nil {
			t.Errorf("rule file %s not copied into %s: %v", p, deployRules, err)
			continue
		}
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, orig) {
			t.Errorf("%s/%s differs from %s: copy it again", deployRules, filepath.Base(p), p)
		}
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %v, the default pack is %v (remove the placeholder once the pack is copied)", deployRules, names, want)
	}
}
