// Package proto is Weir's wire: the subjects every stage publishes to, the
// headers it sets, the message ids JetStream deduplicates on, the encoding of
// a batch of samples, and the JetStream streams and consumers the stages
// share.
//
// A message is one scrape of one target, or one chunk of it when the scrape
// is larger than the message limit. Its subject names the cluster, node and
// source it came from, and its Nats-Msg-Id is derived from those and from
// the scrape time and chunk index, so that every stage can republish it
// under the same id and a replay after a crash is dropped by the stream's
// duplicate window.
package proto
