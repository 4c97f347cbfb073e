package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type target struct {
	URL      URL           `yaml:"url"`
	Interval time.Duration `yaml:"interval"`
}

type testConfig struct {
	Name    string   `yaml:"name"`
	Size    ByteSize `yaml:"size"`
	Targets []target `yaml:"targets"`
	invalid error
}

func (c *testConfig) Validate() error { return c.invalid }

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    testConfig
		wantErr []string // every fragment must appear in the error
	}{
		{
			name: "valid",
			in:   "name: a\nsize: 64MiB\ntargets:\n  - url: http://k:10250/metrics\n    interval: 15s\n",
			want: testConfig{Name: "a", Size: 64 << 20, Targets: []target{{URL: MustParseURL("http://k:10250/metrics"), Interval: 15 * time.Second}}},
		},
		{
			name:    "unknown key names file, line and path",
			in:      "name: a\ntargets:\n  - url: http://k/\n    intervall: 15s\n",
			wantErr: []string{"weir.yaml:4: targets[0].intervall: field intervall not found"},
		},
		{
			name:    "bad duration",
			in:      "targets:\n  - url: http://k/\n    interval: 15x\n",
			wantErr: []string{"weir.yaml:3: targets[0].interval:", "15x"},
		},
		{
			name:    "bad URL",
			in:      "targets:\n  - url: ftp://k/\n",
			wantErr: []string{"weir.yaml:2: targets[0].url: bad URL \"ftp://k/\": scheme must be http or https"},
		},
		{
			name:    "every error reported",
			in:      "size: 12 parsecs\ntargets:\n  - url: k\n    interval: soon\n",
			wantErr: []string{"weir.yaml:1: size: bad size", "weir.yaml:3: targets[0].url: bad URL", "weir.yaml:4: targets[0].interval:"},
		},
		{
			name:    "syntax error",
			in:      "name: [a\n",
			wantErr: []string{"weir.yaml:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got testConfig
			err := Load("weir.yaml", []byte(tt.in), &got)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got.Name != tt.want.Name || got.Size != tt.want.Size || len(got.Targets) != len(tt.want.Targets) ||
					got.Targets[0].URL.String() != tt.want.Targets[0].URL.String() || got.Targets[0].Interval != tt.want.Targets[0].Interval {
					t.Fatalf("Load = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load: no error, want %q", tt.wantErr)
			}
			for _, frag := range tt.wantErr {
				if !strings.Contains(err.Error(), frag) {
					t.Errorf("error %q does not contain %q", err, frag)
				}
			}
		})
	}
}

func TestLoadValidates(t *testing.T) {
	bad := errors.New("targets: empty")
	c := testConfig{invalid: bad}
	err := Load("weir.yaml", []byte("name: a\n"), &c)
	if !errors.Is(err, bad) || !strings.HasPrefix(err.Error(), "weir.yaml: ") {
		t.Fatalf("Load = %v, want the Validate error prefixed with the file name", err)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "1KiB": 1024, "10GiB": 10 << 30, "1GB": 1e9, "5 MiB": 5 << 20} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "GiB", "99999999999TiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q): no error", in)
		}
	}
}
