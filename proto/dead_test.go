package proto

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestDataHeadersLeaveDeliveryHeadersBehind(t *testing.T) {
	in := nats.Header{}
	Meta{MsgID: "id", Encoding: BlockZstd{}.Name(), ScrapeMillis: 5, Chunk: 0, Chunks: 1, Samples: 3}.SetHeaders(in)
	in.Set("Nats-Pin-Id", "pin-of-the-reader")
	in.Set("Nats-Expected-Stream", "X")
	out := DataHeaders(in)
	if _, ok := out["Nats-Pin-Id"]; ok || out.Get("Nats-Expected-Stream") != "" {
		t.Errorf("delivery headers copied: %v", out)
	}
	meta, err := ParseMeta(out)
	if err != nil || meta.MsgID != "id" || meta.Samples != 3 || meta.ScrapeMillis != 5 {
		t.Errorf("data headers lost: %+v, %v", meta, err)
	}
	out.Set(HeaderSamples, "4")
	if in.Get(HeaderSamples) != "3" {
		t.Error("DataHeaders shares its values with the input")
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	if got := oneLine(long, 1023); len(got) != 1022 || !strings.HasPrefix(long, got) {
		t.Errorf("cut to %d bytes, want 1022 on a rune boundary", len(got))
	}
	if got := oneLine("a\r\nb", 10); got != "a  b" {
		t.Errorf("oneLine = %q", got)
	}
}
