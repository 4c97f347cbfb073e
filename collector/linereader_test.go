package collector

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestLineReader reads bodies whose lines straddle reads, outgrow the
// buffer or lack a last newline, one byte per read and in whole chunks.
func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 3*readChunk+5)
	bodies := []string{
		"",
		"\n",
		"a 1\n",
		"a 1",
		"a 1\nb 2\n\n# c\nd",
		long + "\nshort\n" + long,
		strings.Repeat("line of some length\n", 5000),
	}
	for _, body := range bodies {
		want := strings.Split(body, "\n")
		if strings.HasSuffix(body, "\n") || body == "" {
			want = want[:len(want)-1]
		}
		for name, r := range map[string]io.Reader{
			"one byte": iotest.OneByteReader(strings.NewReader(body)),
			"whole":    strings.NewReader(body),
			"data+EOF": iotest.DataErrReader(strings.NewReader(body)),
		} {
			lr := lineReader{r: r, buf: make([]byte, readChunk)}
			var got []string
			for {
				line, complete, err := lr.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s, %.20q: %v", name, body, err)
				}
				if wantComplete := len(got) < len(want)-1 || strings.HasSuffix(body, "\n"); complete != wantComplete {
					t.Fatalf("%s, %.20q: line %d complete = %v", name, body, len(got), complete)
				}
				got = append(got, string(line))
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("%s, %.20q: %d lines, want %d", name, body, len(got), len(want))
			}
		}
	}
}

// TestLineReaderError: a read error ends the lines with that error, after
// the complete lines read before it, never with a partial line.
func TestLineReaderError(t *testing.T) {
	broken := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("a 1\nb 2\npartial"), iotest.ErrReader(broken))
	lr := lineReader{r: r, buf: make([]byte, readChunk)}
	var lines [][]byte
	for {
		line, _, err := lr.next()
		if err != nil {
			if !errors.Is(err, broken) {
				t.Fatalf("err = %v, want %v", err, broken)
			}
			break
		}
		lines = append(lines, bytes.Clone(line))
	}
	if got := string(bytes.Join(lines, []byte("|"))); got != "a 1|b 2" {
		t.Errorf("lines %q before the error, want a 1|b 2", got)
	}
}
