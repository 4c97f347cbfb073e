package proto

import (
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DataHeaders returns a copy of the headers of a data message that travel
// with it from stage to stage: its message id and Weir's own. Headers the
// server adds on delivery stay behind: a Nats-Pin-Id copied into the next
// stream would reach that stream's consumer as the first of two pin ids,
// and its client library would then pull with a pin that is not its own.
func DataHeaders(in nats.Header) nats.Header {
	out := make(nats.Header, len(in))
	for name, values := range in {
		if name == HeaderMsgID || strings.HasPrefix(name, "Weir-") {
			out[name] = append([]string(nil), values...)
		}
	}
	return out
}

// maxErrorHeader bounds the Weir-Error header of a dead letter.
const maxErrorHeader = 1024

// DeadLetter is the message that moves m, which reader (of stage) cannot
// handle, to weir.dead.<stage>: its data and data headers, why
// (Weir-Error) and from where (Weir-Subject). Its id names the reader, or
// the dead-letter stream would drop it as a duplicate of another reader's
// letter for the same scrape: every route of a router, so every sink,
// carries the same message id.
func DeadLetter(stage, reader string, m jetstream.Msg, cause error) *nats.Msg {
	out := nats.NewMsg(DeadSubject(stage))
	out.Header = DataHeaders(m.Headers())
	out.Header.Set(HeaderError, oneLine(cause.Error(), maxErrorHeader))
	out.Header.Set(HeaderSubject, m.Subject())
	if id := out.Header.Get(HeaderMsgID); id != "" {
		out.Header.Set(HeaderMsgID, id+"."+reader)
	}
	out.Data = m.Data()
	return out
}

// OmitPayload drops the data of a dead letter the server refused as over
// max_payload (the headers added pushed it over), and says so in its
// error: the reason matters more than the bytes.
func OmitPayload(letter *nats.Msg) {
	letter.Data = nil
	letter.Header.Set(HeaderError, oneLine(letter.Header.Get(HeaderError)+"; payload omitted: over max_payload", maxErrorHeader))
}

// oneLine makes s fit in a header: one line of at most n bytes, cut on a
// rune boundary.
func oneLine(s string, n int) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) > n {
		s = s[:n]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
