//! The `nats` sink's [`Sink`] implementation (behaviour in the crate docs).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamErrorKind, PublishAckFuture, PublishErrorKind,
    UpdateStreamErrorKind,
};
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, HeaderMap};
use bytes::Bytes;
use spillway_sinks::route::Router;
use spillway_sinks::{Sink, SinkError, SinkRecord};

use crate::config::NatsSinkConfig;

/// Characters NATS does not allow inside a subject token.
fn subject_char(c: char) -> char {
    if c.is_whitespace() || c == '*' || c == '>' {
        '_'
    } else {
        c
    }
}

/// Whether the stream subject `pattern` (with NATS wildcards `*`, `>`)
/// covers `subject`.
pub fn subject_covered(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A live connection and what we know of the stream.
struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The stream's subjects as last seen (or set by us).
    subjects: Option<Vec<String>>,
}

/// The `nats` sink.
pub struct NatsSink {
    config: NatsSinkConfig,
    router: Router,
    conn: Option<Conn>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("config", &self.config)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

fn transient(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Transient(format!("nats sink: {what}: {e}"))
}

impl NatsSink {
    /// Validates `config`; `prefix` and `db` fill `{prefix}` and `{db}` in
    /// the subject templates. Connects on the first delivery.
    pub fn new(config: &NatsSinkConfig, prefix: &str, db: &str) -> Result<NatsSink, SinkError> {
        config.validate()?;
        let router = Router::new(
            "subject",
            &config.subject,
            &config.control_subject,
            &config.subject_mapping,
            prefix,
            db,
            subject_char,
        )
        .map_err(|e| SinkError::Fatal(format!("nats sink: {e}")))?;
        Ok(NatsSink {
            config: config.clone(),
            router,
            conn: None,
        })
    }

    /// The subject a record about `entity` goes to.
    pub fn subject_for(&mut self, entity: Option<&str>) -> String {
        self.router.route(entity).to_owned()
    }

    async fn connect(&self) -> Result<Conn, SinkError> {
        let c = &self.config;
        let mut opts = ConnectOptions::new()
            .name("spillway")
            .connection_timeout(Duration::from_millis(c.connect_timeout_ms))
            .max_reconnects(None);
        if let Some(token) = &c.token {
            opts = opts.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &c.credentials_file {
            opts = opts.credentials_file(path).await.map_err(|e| {
                SinkError::Fatal(format!(
                    "nats sink: cannot read credentials_file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if c.tls {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &c.tls_ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let addrs: Vec<&str> = c.url.split(',').map(str::trim).collect();
        let client = opts.connect(addrs).await.map_err(|e| {
            let msg = e.to_string();
            if matches!(
                e.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation
                    | async_nats::ConnectErrorKind::Authentication
                    | async_nats::ConnectErrorKind::ServerParse
            ) {
                SinkError::Fatal(format!(
                    "nats sink: the server at {} refused the connection ({msg}); check token/user/password/credentials_file",
                    c.url
                ))
            } else {
                transient(&format!("cannot connect to {}", c.url), msg)
            }
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(c.ack_timeout_ms))
            .max_ack_inflight(c.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Conn {
            client,
            js,
            subjects: None,
        })
    }

    /// Makes sure the stream exists and covers every subject in `subjects`.
    async fn ensure_stream(&self, conn: &mut Conn, subjects: &[String]) -> Result<(), SinkError> {
        let name = &self.config.stream;
        if conn.subjects.is_none() {
            match conn.js.get_stream(name).await {
                Ok(mut s) => {
                    let info = s
                        .info()
                        .await
                        .map_err(|e| transient(&format!("reading stream {name}"), e))?;
                    conn.subjects = Some(info.config.subjects.clone());
                }
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.code() == 404) =>
                {
                    if !self.config.manage_stream {
                        return Err(SinkError::Fatal(format!(
                            "nats sink: stream `{name}` does not exist; create it or set manage_stream = true"
                        )));
                    }
                    let config = stream::Config {
                        name: name.clone(),
                        subjects: subjects.to_vec(),
                        storage: stream::StorageType::File,
                        duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
                        ..Default::default()
                    };
                    conn.js
                        .create_stream(config)
                        .await
                        .map_err(|e| match e.kind() {
                            CreateStreamErrorKind::JetStream(j) => SinkError::Fatal(format!(
                                "nats sink: the server refused to create stream `{name}`: {j}"
                            )),
                            _ => transient(&format!("creating stream {name}"), e),
                        })?;
                    tracing::info!(stream = %name, "created the JetStream stream");
                    conn.subjects = Some(subjects.to_vec());
                    return Ok(());
                }
                Err(e) => return Err(transient(&format!("looking up stream {name}"), e)),
            }
        }
        let known = conn.subjects.clone().unwrap_or_default();
        let missing: Vec<String> = subjects
            .iter()
            .filter(|s| !known.iter().any(|p| subject_covered(p, s)))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if !self.config.manage_stream {
            return Err(SinkError::Fatal(format!(
                "nats sink: subject `{}` is not in stream `{name}`; add it to the stream or set manage_stream = true",
                missing[0]
            )));
        }
        // Re-read the config so settings changed by an operator are kept.
        let mut s = conn
            .js
            .get_stream(name)
            .await
            .map_err(|e| transient(&format!("looking up stream {name}"), e))?;
        let mut config = s
            .info()
            .await
            .map_err(|e| transient(&format!("reading stream {name}"), e))?
            .config
            .clone();
        for m in missing {
            if !config.subjects.iter().any(|p| subject_covered(p, &m)) {
                config.subjects.push(m);
            }
        }
        conn.js
            .update_stream(&config)
            .await
            .map_err(|e| match e.kind() {
                UpdateStreamErrorKind::JetStream(j) => SinkError::Fatal(format!(
                    "nats sink: the server refused to add subjects to stream `{name}`: {j}"
                )),
                _ => transient(&format!("updating stream {name}"), e),
            })?;
        tracing::info!(stream = %name, subjects = ?config.subjects, "added subjects to the JetStream stream");
        conn.subjects = Some(config.subjects);
        Ok(())
    }

    async fn publish(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let subjects: Vec<String> = batch
            .iter()
            .map(|r| self.router.route(r.entity.as_deref()).to_owned())
            .collect();
        let mut distinct = subjects.clone();
        distinct.sort();
        distinct.dedup();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let res = self.ensure_stream(&mut conn, &distinct).await;
        // Keep the connection (the client reconnects by itself).
        let js = conn.js.clone();
        self.conn = Some(conn);
        res?;

        let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::new();
        for (rec, subject) in batch.iter().zip(subjects) {
            if in_flight.len() >= self.config.max_in_flight {
                if let Some(ack) = in_flight.pop_front() {
                    self.await_ack(ack).await?;
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, rec.id.as_str());
            headers.insert("Spillway-Lsn", rec.lsn.to_string().as_str());
            let ack = js
                .publish_with_headers(subject, headers, Bytes::copy_from_slice(&rec.value))
                .await
                .map_err(|e| self.publish_error(e))?;
            in_flight.push_back(ack);
        }
        while let Some(ack) = in_flight.pop_front() {
            self.await_ack(ack).await?;
        }
        Ok(())
    }

    async fn await_ack(&mut self, ack: PublishAckFuture) -> Result<(), SinkError> {
        ack.await.map(|_| ()).map_err(|e| self.publish_error(e))
    }

    fn publish_error(&mut self, e: async_nats::jetstream::context::PublishError) -> SinkError {
        match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => SinkError::Fatal(format!(
                "nats sink: a message is larger than the server's max_payload ({e}); raise max_payload on the server or filter the table out"
            )),
            PublishErrorKind::StreamNotFound => {
                // Deleted under us: look it up (and recreate) on the retry.
                if let Some(c) = self.conn.as_mut() {
                    c.subjects = None;
                }
                transient(&format!("no stream takes the messages (stream `{}`)", self.config.stream), e)
            }
            _ => transient("publishing", e),
        }
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.publish(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(conn) = self.conn.take() {
            // Every delivered message was acknowledged already; the flush
            // only tidies up and must not hold a shutdown while the server
            // is away.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.client.flush()).await;
            drop(conn.client);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_coverage() {
        assert!(subject_covered("spillway_public_t", "spillway_public_t"));
        assert!(subject_covered(">", "a_b_c"));
        assert!(subject_covered("a.>", "a.b.c"));
        assert!(!subject_covered("a.>", "a"));
        assert!(subject_covered("a.*.c", "a.b.c"));
        assert!(!subject_covered("a.*", "a.b.c"));
        assert!(!subject_covered("spillway_*", "spillway_public_t"));
    }

    #[test]
    fn bad_config_is_one_line() {
        for (cfg, want) in [
            (NatsSinkConfig::new("http://x"), "not a NATS URL"),
            (
                NatsSinkConfig {
                    stream: "a.b".into(),
                    ..NatsSinkConfig::new("nats://h:4222")
                },
                "stream",
            ),
            (
                NatsSinkConfig {
                    subject: "{nope}".into(),
                    ..NatsSinkConfig::new("nats://h:4222")
                },
                "{nope}",
            ),
            (
                NatsSinkConfig {
                    token: Some("t".into()),
                    user: Some("u".into()),
                    password: Some("p".into()),
                    ..NatsSinkConfig::new("nats://h:4222")
                },
                "choose one",
            ),
        ] {
            let e = NatsSink::new(&cfg, "p", "d").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'));
        }
        let cfg = NatsSinkConfig {
            token: Some("hunter2".into()),
            ..NatsSinkConfig::new("nats://h:4222")
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
