//! # spillway-sink-kafka — the `kafka` sink
//!
//! Delivers change events into Kafka topics through librdkafka (the
//! `rdkafka` crate, built from source with `cmake-build`). It is a [`Sink`]
//! under Spillway's sink runtime ([`spillway_sinks::run_sink`]), which
//! provides the checkpoint, batching, filters, encoding and retries; this
//! crate produces a batch and waits until the brokers acknowledged every
//! record. It lives in its own crate so librdkafka builds once.
//!
//! * **Topics.** The [`topic`](KafkaSinkConfig::topic) template, default
//!   `{prefix}.{schema}.{table}` — one topic per table, as Debezium and
//!   reference 003 do — unless [`topic_mapping`](KafkaSinkConfig::topic_mapping)
//!   names another for the table (`{"trades": "transactions"}`). Records of
//!   no table (`message`, `requery_required`) go to
//!   [`control_topic`](KafkaSinkConfig::control_topic) (`{prefix}.control`).
//!   Characters Kafka does not allow in a topic name become `_`. With
//!   [`create_topics`](KafkaSinkConfig::create_topics) (the default) each
//!   topic is created before its first record with
//!   [`partitions`](KafkaSinkConfig::partitions) and
//!   [`replication_factor`](KafkaSinkConfig::replication_factor); an
//!   existing topic is used as it is.
//! * **Records.** Key = the row's primary key as compact JSON
//!   (`{"id":1}`), so all changes of a row go to one partition, in order.
//!   Value = the encoded event. Headers: `spillway-id` (the event id, the
//!   same on every replay: consumers deduplicate by it) and `spillway-lsn`.
//!   Timestamp = the commit time.
//! * **Acknowledgement.** The producer is idempotent
//!   (`enable.idempotence`, `acks=all`): librdkafka's own retries neither
//!   duplicate nor reorder records within a partition.
//!   [`Sink::deliver`] returns `Ok` only when every record of the batch has
//!   its delivery report. A record that could not be delivered within
//!   [`delivery_timeout_ms`](KafkaSinkConfig::delivery_timeout_ms) (broker
//!   down, partition without a leader) is [`SinkError::Transient`]: the
//!   runtime retries the batch, and records that had arrived are in Kafka
//!   twice, with the same `spillway-id`. Authentication and authorization
//!   failures, a record too large for the broker and an invalid topic are
//!   [`SinkError::Fatal`]. After a fatal librdkafka producer error the
//!   producer is rebuilt on the next attempt.
//! * **Security.** [`security_protocol`](KafkaSinkConfig::security_protocol)
//!   `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`. TLS as in reference
//!   000: a PKCS#12 keystore with the client certificate
//!   ([`ssl_keystore_location`](KafkaSinkConfig::ssl_keystore_location),
//!   [`ssl_keystore_password`](KafkaSinkConfig::ssl_keystore_password)) and
//!   a PKCS#12 truststore with the cluster CA
//!   ([`ssl_truststore_location`](KafkaSinkConfig::ssl_truststore_location),
//!   [`ssl_truststore_password`](KafkaSinkConfig::ssl_truststore_password);
//!   librdkafka cannot read a PKCS#12 truststore, so its certificates are
//!   extracted and passed as PEM), or a PEM CA file
//!   ([`ssl_ca_location`](KafkaSinkConfig::ssl_ca_location)). SASL with
//!   [`sasl_mechanism`](KafkaSinkConfig::sasl_mechanism) (`PLAIN`,
//!   `SCRAM-SHA-256`, `SCRAM-SHA-512`), [`sasl_username`](KafkaSinkConfig::sasl_username)
//!   and [`sasl_password`](KafkaSinkConfig::sasl_password).
//! * **Pass-through.** Any librdkafka producer property goes under
//!   [`options`](KafkaSinkConfig::options) (`[sinks.options]` in the
//!   config file) and overrides what this sink sets, except
//!   `enable.idempotence` which stays on.

mod config;
mod sink;

pub use config::KafkaSinkConfig;
mod read;

pub use read::{read_topics, KafkaMessage};
pub use sink::{client_config, producer_config, KafkaSink};

#[doc(no_inline)]
pub use spillway_sinks::{Sink, SinkError};
