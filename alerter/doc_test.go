package alerter

import (
	"os"
	"strings"
	"testing"
)

// TestEveryFunctionDocumented: README.md gives each function of the rule
// language with an example that uses it.
func TestEveryFunctionDocumented(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, name := range functionNames() {
		if !strings.Contains(doc, "`"+name) {
			t.Errorf("README.md does not describe %s", name)
		}
		if !strings.Contains(doc, "\n"+name+"(") && !strings.Contains(doc, "("+name+"(") && !strings.Contains(doc, " "+name+"(") {
			t.Errorf("README.md has no example using %s(", name)
		}
	}
	for name := range templateFuncs {
		if !strings.Contains(doc, name) {
			t.Errorf("README.md does not describe template function %s", name)
		}
	}
}
