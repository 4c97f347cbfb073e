package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Validator is implemented by configurations that check themselves after
// decoding.
type Validator interface{ Validate() error }

// LoadFile decodes the YAML file at path into out, which should already hold
// the defaults, and validates it.
func LoadFile(path string, out any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Load(path, data, out)
}

// Load decodes data strictly into out, then validates it.
func Load(name string, data []byte, out any) error {
	if err := Decode(name, data, out); err != nil {
		return err
	}
	if v, ok := out.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Decode decodes data strictly into out. Every error names name and the
// line, and, where the line holds one, the dotted path of the key.
func Decode(name string, data []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return annotate(name, data, err)
	}
	return nil
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// annotate rewrites yaml's "line N: msg" errors as "file:N: key.path: msg",
// one per line, so that every mistake in the file is reported at once.
func annotate(name string, data []byte, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	paths := keyPaths(data)
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		sub := lineRE.FindStringSubmatch(m)
		if sub == nil {
			errs = append(errs, fmt.Errorf("%s: %s", name, strings.TrimPrefix(m, "yaml: ")))
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		msg := sub[2]
		if p := paths[line]; p != "" {
			msg = p + ": " + msg
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, msg))
	}
	return errors.Join(errs...)
}

// keyPaths maps each line that holds a mapping key to the dotted path of
// that key, such as "collector.targets[0].interval".
func keyPaths(data []byte) map[int]string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return nil
	}
	paths := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				paths[k.Line] = p
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := paths[c.Line]; !ok {
					paths[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(&root, "")
	return paths
}
