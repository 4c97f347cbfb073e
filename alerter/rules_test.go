package alerter

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadRulesErrors(t *testing.T) {
	tests := []struct {
		name, expr string
		wantErr    error
		wantPos    string // file:line:column
		wantText   string
	}{
		{"unknown function", `rat(series("up"), "5m") > 0`, ErrUnknownFunction, "rules.yaml:5:16", "unknown function or name rat"},
		{"bad matcher", "series(\"up\", `job=~\"(kubelet\"`) == 0", ErrBadArg, "rules.yaml:5:16", "missing closing )"},
		{"bad range", `rate(series("up"), "5 minutes") > 0`, ErrBadArg, "rules.yaml:5:16", `range "5 minutes"`},
		{"range over a computed vector", `rate(sum_by(series("up")), "5m") > 0`, ErrBadArg, "rules.yaml:5:16", "first argument must be series(...)"},
		{"does not compile", `series("up") > > 1`, ErrCompile, "rules.yaml:5:31", "unexpected token"},
		{"wrong type", `"firing"`, ErrWrongType, "rules.yaml:5:16", "string, want a vector, a bool or a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := filepath.Join(dir, "rules.yaml")
			text := "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: " + yamlQuote(tt.expr) + "\n"
			if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadRules([]string{f}, time.Minute)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantPos+":") || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q, want position %s and %q", err, tt.wantPos, tt.wantText)
			}
		})
	}
}

func yamlQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func TestLoadRulesReportsEveryBadRule(t *testing.T) {
	f := writeFile(t, t.TempDir(), "r.yaml", `groups:
  - name: g
    rules:
      - alert: One
        expr: nope() > 1
      - alert: Good
        expr: series("up") == 0
      - alert: Two
        expr: series("up", "a=") > 1
        labels:
          bad-name: x
`)
	_, err := LoadRules([]string{f}, time.Minute)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"r.yaml:5:", `rule "One"`, "r.yaml:9:", `rule "Two"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := LoadRules([]string{writeFile(t, t.TempDir(), "u.yaml", "groups:\n  - name: g\n    rulez: []\n")}, time.Minute); err == nil || !strings.Contains(err.Error(), "u.yaml:3") {
		t.Errorf("unknown key: error %v, want it at u.yaml:3", err)
	}
}

func TestRuleTestsRefuseHugeExpansions(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: series(\"up\") == 0\n")
	for name, body := range map[string]string{
		"values":    "    input_series:\n      - series: 'up'\n        values: '0+1x10000000'\n",
		"eval_time": "    alert_rule_test:\n      - eval_time: 100000000m\n        alertname: A\n",
	} {
		f := writeFile(t, dir, name+"_test.yaml", "rule_files: [r.yaml]\ntests:\n  - interval: 1m\n"+body)
		err := TestRules(f, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "more than 100000") {
			t.Errorf("%s: error %v, want a bound of 100000", name, err)
		}
	}
}
