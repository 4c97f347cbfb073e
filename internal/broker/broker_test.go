package broker

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStartEmbeddedOnATakenPort: a port someone else holds fails the start
// at once, with the server's own reason, instead of a silent wait.
func TestStartEmbeddedOnATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var logged bytes.Buffer
	start := time.Now()
	s, err := StartEmbedded(EmbeddedConfig{Port: port, StoreDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err == nil {
		s.Shutdown()
		t.Fatal("started on a port already taken")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("failed after %s; want at once", took)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(logged.String(), "level=ERROR") {
		t.Errorf("error %q, log %q: want the port named, and logged as an error", err, logged.String())
	}
}

func TestStartEmbeddedLogsQuietly(t *testing.T) {
	var logged bytes.Buffer
	s, err := StartEmbedded(EmbeddedConfig{Port: -1, StoreDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	if logged.Len() != 0 {
		t.Errorf("a clean start and stop logged at info or above:\n%s", logged.String())
	}
}
