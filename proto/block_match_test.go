package proto

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// TestMatchFindsSeenSeries checks Match against string comparison: every
// series of the next payload is matched to the seen series with its
// labels, and the new ones to none, in both block versions.
func TestMatchFindsSeenSeries(t *testing.T) {
	first := captureSeries(t, fixtures.Cadvisor135)
	next := fixtures.PodsReplaced(first)
	seenAt := map[string]int32{}
	for k, s := range first {
		seenAt[fmt.Sprint(s.Labels)] = int32(k)
	}
	want := make([]int32, len(next))
	newSeries := 0
	for i, s := range next {
		k, ok := seenAt[fmt.Sprint(s.Labels)]
		if !ok {
			k = -1
			newSeries++
		}
		want[i] = k
	}
	if newSeries == 0 || len(next)-newSeries == len(first) {
		t.Fatalf("the churned scrape must add and remove series")
	}
	encode := map[string]func(*Batch) []byte{
		"block2": func(b *Batch) []byte {
			p, err := BlockZstd{}.Append(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		"block1": func(b *Batch) []byte { return appendBlock1(nil, b) },
	}
	for name, enc := range encode {
		var r BlockReader
		var seen SeenLabels
		if err := r.Reset(enc(&Batch{Series: first})); err != nil {
			t.Fatal(err)
		}
		if got, err := r.Match(&seen, nil); err != nil || slices.ContainsFunc(got, func(k int32) bool { return k != -1 }) {
			t.Fatalf("%s: nothing seen yet: got %v, %v", name, got, err)
		}
		if err := r.Keep(&seen); err != nil {
			t.Fatal(err)
		}
		if err := r.Reset(enc(&Batch{Series: next})); err != nil {
			t.Fatal(err)
		}
		got, err := r.Match(&seen, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s: series %d %v matched to %d, want %d", name, i, next[i].Labels, got[i], want[i])
				}
			}
		}
		// What a stage reads back of a seen series is its labels.
		k := want[len(want)/2]
		names, values := seen.Series(int(k))
		var ls []prompb.Label
		for j := range names {
			ls = append(ls, prompb.Label{Name: seen.Symbols()[names[j]], Value: seen.Symbols()[values[j]]})
		}
		if !reflect.DeepEqual(ls, first[k].Labels) {
			t.Fatalf("%s: seen series %d: %v, want %v", name, k, ls, first[k].Labels)
		}
	}
}

// TestMatchMalformed checks that a payload whose label columns are broken
// fails Match and Keep with ErrMalformed, and Keep leaves nothing seen.
func TestMatchMalformed(t *testing.T) {
	b := Batch{Series: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
	}}}
	var seen SeenLabels
	var r BlockReader
	good, _ := BlockZstd{}.Append(nil, &b)
	if err := r.Reset(good); err != nil {
		t.Fatal(err)
	}
	if err := r.Keep(&seen); err != nil || seen.Len() != 1 {
		t.Fatalf("Keep: %d series, %v", seen.Len(), err)
	}
	raw := (&blockState{}).appendLabels(nil, &b)
	raw[len(raw)-1] = 9 // a value ref past the symbols
	bad, err := appendLabelsFrame(nil, raw, 1)
	if err != nil {
		t.Fatal(err)
	}
	bad = append(bad, good[len(r.LabelsPart()):]...)
	if err := r.Reset(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Match(&seen, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Match: %v, want ErrMalformed", err)
	}
	if err := r.Keep(&seen); !errors.Is(err, ErrMalformed) || seen.Len() != 0 {
		t.Fatalf("Keep: %d series, %v; want none, ErrMalformed", seen.Len(), err)
	}
}

// TestLabelsBuilderAsAppendBlockLabels builds the labels part of a churned
// scrape from the seen series and the new ones' labels, read back from a
// kept labels part, and checks it is the one AppendBlockLabels writes.
func TestLabelsBuilderAsAppendBlockLabels(t *testing.T) {
	first := captureSeries(t, fixtures.Cadvisor135)
	next := fixtures.PodsReplaced(first)
	kept, err := AppendBlockLabels(nil, first)
	if err != nil {
		t.Fatal(err)
	}
	var r BlockReader
	var seen SeenLabels
	if err := r.ResetLabels(kept); err != nil {
		t.Fatal(err)
	}
	if err := r.Keep(&seen); err != nil || seen.Len() != len(first) {
		t.Fatalf("kept labels part: %d series, %v", seen.Len(), err)
	}
	payload, err := BlockZstd{}.Append(nil, &Batch{Series: next})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(payload); err != nil {
		t.Fatal(err)
	}
	matched, err := r.Match(&seen, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b LabelsBuilder
	b.Reset(&seen)
	added := 0
	for i, k := range matched {
		if k >= 0 {
			b.AddSeen(int(k))
			continue
		}
		b.Add(next[i].Labels)
		added++
	}
	got, err := b.AppendPart(nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := AppendBlockLabels(nil, next)
	if err != nil {
		t.Fatal(err)
	}
	if added == 0 || added == len(next) {
		t.Fatalf("%d of %d series added by their labels: the test needs both kinds", added, len(next))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("built labels part of %d bytes differs from AppendBlockLabels' %d", len(got), len(want))
	}
	if err := r.ResetLabels(payload[:len(r.LabelsPart())-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ResetLabels of a cut labels part: %v, want ErrMalformed", err)
	}
}
