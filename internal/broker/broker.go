// Package broker starts the embedded NATS JetStream server that `weir all`,
// `weir demo` and the tests use. Stages connect to it, or to any NATS
// server, with natsclient, which a collector links without the server.
package broker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig is the embedded server of `weir all`.
type EmbeddedConfig struct {
	Host     string // listen host; loopback by default
	Port     int    // -1 picks a free port
	StoreDir string // JetStream file store
	// MaxPayload is the largest message the server accepts; 0 keeps the
	// server default (1 MiB).
	MaxPayload int32
	// Log receives the server's warnings and errors (a port already taken,
	// a store that cannot be written); nil keeps it silent.
	Log *slog.Logger
}

// StartEmbedded starts a single JetStream server and waits until it accepts
// connections.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: "weir-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	log := serverLog{log: cfg.Log, fatal: make(chan string, 1)}
	if log.log == nil {
		log.log = slog.New(slog.DiscardHandler)
	}
	s.SetLoggerV2(log, false, false, false)
	s.Start()
	for deadline := time.Now().Add(10 * time.Second); !s.ReadyForConnections(100 * time.Millisecond); {
		select {
		case msg := <-log.fatal:
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats: not ready after 10s (store %s)", cfg.StoreDir)
		}
	}
	return s, nil
}

// serverLog passes the embedded server's log to slog. Its notices (the
// start-up banner) are debug. A fatal error (a port already taken, a store
// that cannot be written), which an embedded server does not exit on, goes
// to fatal for StartEmbedded to return.
type serverLog struct {
	log   *slog.Logger
	fatal chan string
}

func (l serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l serverLog) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Tracef(format string, v ...any) {}
