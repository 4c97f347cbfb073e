package sink

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

const scrapeMillis = 1_700_000_000_000

func TestRetriesServerErrorsAndAcksOnlyAfterSuccess(t *testing.T) {
	env := newEnv(t)
	var failing atomic.Bool
	failing.Store(true)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		if failing.Load() {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis, series)
	s, _ := env.startSink(t, testConfig("retry", rc.url()))

	// Fail for longer than AckWait (1s): the keepalive must stop the server
	// from redelivering, and nothing may be acked.
	start := time.Now()
	waitFor(t, 10*time.Second, "three failed requests", func() bool { return len(rc.requests()) >= 3 })
	time.Sleep(1500*time.Millisecond - time.Since(start))
	info := env.consumerInfo(t, "retry")
	if info.AckFloor.Stream != 0 || info.NumAckPending != 1 || info.NumRedelivered != 0 {
		t.Fatalf("while failing: ack floor %d, ack pending %d, redelivered %d; want 0, 1, 0",
			info.AckFloor.Stream, info.NumAckPending, info.NumRedelivered)
	}
	if got := metricValue(t, s.metrics.samplesRetried); got < float64(len(series)) {
		t.Fatalf("samples retried = %v, want at least %d", got, len(series))
	}
	if got := metricValue(t, s.metrics.pending); got != 1 {
		t.Fatalf("pending messages = %v, want 1", got)
	}

	failing.Store(false)
	rc.waitSamples(t, uniqueKeys(series), 10*time.Second)
	env.waitAcked(t, "retry", seq)
	if got := metricValue(t, s.metrics.samplesSent); got != float64(len(series)) {
		t.Errorf("samples sent = %v, want %d", got, len(series))
	}
	if got := metricValue(t, s.metrics.requests.WithLabelValues("5xx")); got < 3 {
		t.Errorf("requests{code=5xx} = %v, want at least 3", got)
	}
	waitFor(t, time.Second, "acked counter", func() bool { return metricValue(t, s.metrics.messagesAcked) == 1 })
	if got := metricValue(t, s.metrics.highestSent.g); got != scrapeMillis/1000 {
		t.Errorf("highest sent timestamp = %v, want %v", got, scrapeMillis/1000)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) int {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return http.StatusNoContent
	})
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis, series)
	env.startSink(t, testConfig("throttled", rc.url())) // min backoff 10ms

	rc.waitSamples(t, uniqueKeys(series), 10*time.Second)
	env.waitAcked(t, "throttled", seq)
	calls := rc.requests()
	if len(calls) != 2 {
		t.Fatalf("got %d requests, want 2", len(calls))
	}
	if gap := calls[1].at.Sub(calls[0].at); gap < 950*time.Millisecond {
		t.Fatalf("retried %s after a 429 with Retry-After: 1, want at least 1s", gap)
	}
}

// TestClientErrorIsDeadLetteredNotRetried: a 4xx is not retried; the
// message goes to the dead letters with the backend's answer, and is then
// acked.
func TestClientErrorIsDeadLetteredNotRetried(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) int {
		return http.StatusBadRequest
	})
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	subj := subject("node-1", proto.SourceKubeProxy)
	seq := env.publishScrape(t, subj, scrapeMillis, series)
	s, _ := env.startSink(t, testConfig("rejected", rc.url()))

	env.waitAcked(t, "rejected", seq)
	time.Sleep(200 * time.Millisecond) // room for a retry that must not come
	if calls := rc.requests(); len(calls) != 1 {
		t.Fatalf("got %d requests, want exactly 1", len(calls))
	}
	if got := metricValue(t, s.metrics.samplesFailed.WithLabelValues("http_4xx")); got != float64(len(series)) {
		t.Errorf("samples failed{reason=http_4xx} = %v, want %d", got, len(series))
	}
	if got := metricValue(t, s.metrics.samplesRetried); got != 0 {
		t.Errorf("samples retried = %v, want 0", got)
	}
	if got := metricValue(t, s.metrics.messagesDead.WithLabelValues("rejected")); got != 1 {
		t.Errorf("messages dead{reason=rejected} = %v, want 1", got)
	}
	dead, err := env.js.Stream(context.Background(), proto.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	letter, err := dead.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if e := letter.Header.Get(proto.HeaderError); !strings.Contains(e, "HTTP 400: rejected by the test receiver") {
		t.Errorf("dead letter error %q, want the backend's status and answer", e)
	}
	if got := letter.Header.Get(proto.HeaderSubject); !strings.HasPrefix(got, subj.String()+".") {
		t.Errorf("dead letter subject header %q, want %q with its partition", got, subj.String())
	}
	var b proto.Batch
	if err := proto.DefaultEncoding.Decode(letter.Data, &b); err != nil || len(b.Series) != len(series) {
		t.Errorf("dead letter payload: %d series, err %v; want the %d series sent", len(b.Series), err, len(series))
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	env := newEnv(t)
	var hanging atomic.Bool
	hanging.Store(true)
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) int {
		if hanging.Load() {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
		return http.StatusOK
	})
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis, series)
	cfg := testConfig("slow", rc.url())
	cfg.RemoteTimeout = 200 * time.Millisecond
	s, _ := env.startSink(t, cfg)

	waitFor(t, 10*time.Second, "two timed-out requests", func() bool {
		return metricValue(t, s.metrics.requests.WithLabelValues("error")) >= 2
	})
	if info := env.consumerInfo(t, "slow"); info.AckFloor.Stream != 0 || info.NumAckPending != 1 {
		t.Fatalf("while timing out: ack floor %d, ack pending %d; want 0, 1", info.AckFloor.Stream, info.NumAckPending)
	}
	hanging.Store(false)
	rc.waitSamples(t, uniqueKeys(series), 10*time.Second)
	env.waitAcked(t, "slow", seq)
	if got := metricValue(t, s.metrics.samplesRetried); got < 2*float64(len(series)) {
		t.Errorf("samples retried = %v, want at least %d", got, 2*len(series))
	}
}

func TestMaxSamplesPerSendAndProtocolHeaders(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	series := captureSeries(t, fixtures.Cadvisor135, scrapeMillis) // 4,621 samples
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, 512<<10)
	if err != nil || len(chunks) != 1 {
		t.Fatalf("want the capture in one message, got %d chunks (%v)", len(chunks), err)
	}
	seq := env.publishScrape(t, subject("node-1", proto.SourceCadvisor), scrapeMillis, series)
	cfg := testConfig("split", rc.url())
	cfg.QueueConfig.MaxSamplesPerSend = 1000
	cfg.Headers = map[string]string{"X-Scope-OrgID": "tenant-a"}
	env.startSink(t, cfg)

	rc.waitSamples(t, uniqueKeys(series), 10*time.Second)
	env.waitAcked(t, "split", seq)
	calls := rc.requests()
	want := (len(series) + 999) / 1000
	if len(calls) != want {
		t.Fatalf("got %d requests for %d samples, want %d", len(calls), len(series), want)
	}
	total := 0
	for i, c := range calls {
		total += c.samples
		if c.samples > 1000 {
			t.Errorf("request %d holds %d samples, limit 1000", i, c.samples)
		}
		for name, value := range map[string]string{
			"Content-Encoding":                  "snappy",
			"Content-Type":                      "application/x-protobuf",
			"X-Prometheus-Remote-Write-Version": "0.1.0",
			"User-Agent":                        "weir-sink",
			"X-Scope-Orgid":                     "tenant-a",
		} {
			if got := c.header.Get(name); got != value {
				t.Errorf("request %d: %s = %q, want %q", i, name, got, value)
			}
		}
		for _, ts := range c.series {
			if !slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
				t.Fatalf("request %d: labels not sorted: %v", i, ts.Labels)
			}
		}
	}
	if total != len(series) {
		t.Errorf("requests hold %d samples, want %d", total, len(series))
	}
}

func TestUndecodableMessagesAreDeadLettered(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	good := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	subj := subject("node-1", proto.SourceKubeProxy)
	withMeta := func(id, subject, encoding string, payload []byte) *nats.Msg {
		m := nats.NewMsg(subject)
		proto.Meta{MsgID: id, Encoding: encoding, ScrapeMillis: scrapeMillis, Chunks: 1}.SetHeaders(m.Header)
		m.Data = payload
		return m
	}
	goodPayload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: good})
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		msg       *nats.Msg
		wantError string
	}{
		{withMeta("bad-payload", subj.String(), proto.DefaultEncoding.Name(), []byte("not snappy")), "malformed payload"},
		{withMeta("bad-encoding", subj.String(), "zstd-v9", goodPayload), "unknown encoding"},
		{&nats.Msg{Subject: subj.String(), Data: goodPayload}, "missing Weir-Encoding"},
		{withMeta("bad-subject", "weir.raw.test.node-1.nosuchsource", proto.DefaultEncoding.Name(), goodPayload), "bad subject"},
	}
	for _, b := range bad {
		env.publish(t, b.msg)
	}
	seq := env.publishScrape(t, subj, scrapeMillis, good)
	s, _ := env.startSink(t, testConfig("dead", rc.url()))

	rc.waitSamples(t, uniqueKeys(good), 10*time.Second)
	env.waitAcked(t, "dead", seq)
	if got := metricValue(t, s.metrics.messagesDead.WithLabelValues("decode")); got != float64(len(bad)) {
		t.Errorf("messages dead = %v, want %d", got, len(bad))
	}
	ctx := context.Background()
	dead, err := env.js.Stream(ctx, proto.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	// Shards dead-letter in parallel: match letters by their error.
	var letters []*jetstream.RawStreamMsg
	for seq := range uint64(len(bad)) {
		got, err := dead.GetMsg(ctx, seq+1)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq+1, err)
		}
		letters = append(letters, got)
	}
	for _, b := range bad {
		i := slices.IndexFunc(letters, func(m *jetstream.RawStreamMsg) bool {
			return strings.Contains(m.Header.Get(proto.HeaderError), b.wantError)
		})
		if i < 0 {
			t.Errorf("no dead letter with an error mentioning %q", b.wantError)
			continue
		}
		got := letters[i]
		if got.Subject != proto.DeadSubject("sink") {
			t.Errorf("%s: dead letter on %q, want %q", b.wantError, got.Subject, proto.DeadSubject("sink"))
		}
		// The stream appended a partition token to the published subject.
		if s := got.Header.Get(proto.HeaderSubject); !strings.HasPrefix(s, b.msg.Subject+".") {
			t.Errorf("%s: %s = %q, want %q with a partition token", b.wantError, proto.HeaderSubject, s, b.msg.Subject)
		}
		if string(got.Data) != string(b.msg.Data) {
			t.Errorf("%s: payload changed", b.wantError)
		}
		if id := b.msg.Header.Get(proto.HeaderMsgID); id != "" {
			if gotID := got.Header.Get(proto.HeaderMsgID); gotID != id+".sink-dead" {
				t.Errorf("%s: message id %q, want %q", b.wantError, gotID, id+".sink-dead")
			}
			if enc := got.Header.Get(proto.HeaderEncoding); enc != b.msg.Header.Get(proto.HeaderEncoding) {
				t.Errorf("%s: original headers not kept: %s = %q", b.wantError, proto.HeaderEncoding, enc)
			}
		}
	}
}

// TestRestartLosesNothing stops a sink while its backend is slow and
// messages are in flight, then starts a new one under the same name. With
// AckWait at 30s, only the nacks of the first sink let the second finish
// in time; every sample must arrive, each series in order.
func TestRestartLosesNothing(t *testing.T) {
	env := newEnv(t)
	var slow atomic.Bool
	slow.Store(true)
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) int {
		if slow.Load() {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-r.Context().Done():
			}
		}
		return http.StatusNoContent
	})
	base := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	const targets, scrapes = 8, 10
	var lastSeq uint64
	for scrape := range scrapes {
		millis := int64(scrapeMillis + scrape*15_000)
		for node := range targets {
			name := "node-" + string(rune('a'+node))
			lastSeq = env.publishScrape(t, subject(name, proto.SourceKubeProxy), millis, forTarget(stamped(base, millis), name))
		}
	}
	want := uniqueKeys(base) * scrapes * targets
	cfg := testConfig("restart", rc.url())
	cfg.AckWait = 30 * time.Second
	cfg.QueueConfig.MaxSamplesPerSend = 100

	_, stop := env.startSink(t, cfg)
	waitFor(t, 10*time.Second, "some requests", func() bool { return len(rc.requests()) >= 20 })
	stop()
	if info := env.consumerInfo(t, "restart"); info.AckFloor.Stream >= lastSeq {
		t.Fatalf("the first sink finished everything (ack floor %d); the test needs it stopped midway", info.AckFloor.Stream)
	}
	slow.Store(false)

	start := time.Now()
	env.startSink(t, cfg) // same name, same registry
	rc.waitSamples(t, want, 10*time.Second)
	env.waitAcked(t, "restart", lastSeq)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("second sink took %s: messages waited for AckWait instead of being nacked", took)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key, stamps := range rc.order {
		if !slices.IsSorted(stamps) {
			t.Fatalf("series %s arrived out of order: %v", key, stamps)
		}
	}
}

func TestPerSeriesOrderAcrossMessagesAndRetries(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, func(n int, _ http.ResponseWriter, _ *http.Request) int {
		if n%5 == 4 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	base := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)[:50]
	const scrapes = 30
	nodes := []string{"a", "b", "c"}
	var lastSeq uint64
	for scrape := range scrapes {
		millis := int64(scrapeMillis + scrape*15_000)
		for _, node := range nodes {
			lastSeq = env.publishScrape(t, subject(node, proto.SourceKubeProxy), millis, forTarget(stamped(base, millis), node))
		}
	}
	cfg := testConfig("order", rc.url())
	cfg.QueueConfig.MaxShards = 2
	cfg.QueueConfig.MaxSamplesPerSend = 20
	env.startSink(t, cfg)

	rc.waitSamples(t, uniqueKeys(base)*scrapes*len(nodes), 20*time.Second)
	env.waitAcked(t, "order", lastSeq)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key, stamps := range rc.order {
		if len(stamps) != scrapes {
			t.Errorf("series %s: %d samples accepted, want %d", key, len(stamps), scrapes)
		}
		for i := 1; i < len(stamps); i++ {
			if stamps[i] <= stamps[i-1] {
				t.Fatalf("series %s: timestamp %d after %d", key, stamps[i], stamps[i-1])
			}
		}
	}
}

// TestLateRedeliveryIsNotSentAgain makes the consumer loop wait on a full
// shard for longer than AckWait, so that the server redelivers what sits in
// the client library's buffer. The copies must not reach the backend: they
// would put old samples after newer ones.
func TestLateRedeliveryIsNotSentAgain(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		time.Sleep(200 * time.Millisecond)
		return http.StatusNoContent
	})
	base := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)[:20]
	const scrapes = 12
	var lastSeq uint64
	for scrape := range scrapes {
		millis := int64(scrapeMillis + scrape*15_000)
		lastSeq = env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), millis, stamped(base, millis))
	}
	cfg := testConfig("late", rc.url())
	cfg.MaxAckPending = 8 // two messages per shard queue, eight in the client's buffer
	env.startSink(t, cfg)

	rc.waitSamples(t, uniqueKeys(base)*scrapes, 20*time.Second)
	env.waitAcked(t, "late", lastSeq)
	if info := env.consumerInfo(t, "late"); info.Delivered.Consumer <= scrapes {
		t.Logf("no redelivery happened (%d deliveries): the test did not exercise its case", info.Delivered.Consumer)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key, stamps := range rc.order {
		if len(stamps) != scrapes || !slices.IsSorted(stamps) {
			t.Fatalf("series %s: got %v, want %d timestamps in order, each once", key, stamps, scrapes)
		}
	}
}
