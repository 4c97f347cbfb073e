// Package cli holds what the commands of every Weir binary share: the
// sections of the configuration file all stages read, the flags and
// environment a container sets, and the process around a stage (logger,
// registry, NATS connection, streams, telemetry server, signals). The
// collector's command lives here too, because two binaries run it: `weir
// collector` and `weir-collector`, which links the collector alone so that
// the agent on every node carries none of the other stages' code.
package cli
