//! Configuration of the `nats` sink.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use spillway_sinks::SinkError;

/// `[[sinks]] type = "nats"` settings (the common settings — name, tables,
/// operations, format, prefix, batching — are in
/// [`SinkSettings`](spillway_sinks::SinkSettings)).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`; several separated by
    /// commas.
    pub url: String,
    /// Subject template for table events (`{prefix}`, `{db}`, `{schema}`,
    /// `{table}`). Default `{prefix}_{schema}_{table}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Subject for events of no table (`message`, `requery_required`).
    /// Default `{prefix}_control`.
    #[serde(default = "default_control_subject")]
    pub control_subject: String,
    /// Per-table subjects: `{"trades": "transactions"}`; keys are table
    /// names or `schema.table`, values subject templates.
    #[serde(default)]
    pub subject_mapping: BTreeMap<String, String>,
    /// The JetStream stream. Default `spillway`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Create the stream when missing and add new subjects to it. Default
    /// true.
    #[serde(default = "default_true")]
    pub manage_stream: bool,
    /// The stream's duplicate window when this sink creates it, seconds
    /// (default 120). Replays older than this are not deduplicated.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_s: u64,
    /// Most messages published and not yet acknowledged (default 1024).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for one acknowledgement (default 5000 ms).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// How long a connection attempt may take (default 5000 ms).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<String>,
    /// User for user/password authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// A `.creds` file (JWT + NKey).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA(s) to trust for the server's certificate.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_subject() -> String {
    "{prefix}_{schema}_{table}".into()
}
fn default_control_subject() -> String {
    "{prefix}_control".into()
}
fn default_stream() -> String {
    "spillway".into()
}
fn default_true() -> bool {
    true
}
fn default_duplicate_window() -> u64 {
    120
}
fn default_in_flight() -> usize {
    1024
}
fn default_ack_timeout() -> u64 {
    5000
}
fn default_connect_timeout() -> u64 {
    5000
}

impl std::fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsSinkConfig")
            .field("url", &self.url)
            .field("subject", &self.subject)
            .field("control_subject", &self.control_subject)
            .field("subject_mapping", &self.subject_mapping)
            .field("stream", &self.stream)
            .field("manage_stream", &self.manage_stream)
            .field("duplicate_window_s", &self.duplicate_window_s)
            .field("max_in_flight", &self.max_in_flight)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("token", &hidden(&self.token))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl NatsSinkConfig {
    /// Defaults for a server at `url`.
    pub fn new(url: impl Into<String>) -> NatsSinkConfig {
        NatsSinkConfig {
            url: url.into(),
            subject: default_subject(),
            control_subject: default_control_subject(),
            subject_mapping: BTreeMap::new(),
            stream: default_stream(),
            manage_stream: true,
            duplicate_window_s: default_duplicate_window(),
            max_in_flight: default_in_flight(),
            ack_timeout_ms: default_ack_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// Checks what can be checked without a server; one-line errors.
    pub fn validate(&self) -> Result<(), SinkError> {
        let fatal = |m: String| Err(SinkError::Fatal(m));
        if self.url.trim().is_empty() {
            return fatal("nats sink: url is empty; write e.g. nats://127.0.0.1:4222".into());
        }
        for u in self.url.split(',') {
            let u = u.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| u.starts_with(s) && u.len() > s.len())
                || (!u.contains("://") && !u.is_empty());
            if !ok {
                return fatal(format!(
                    "nats sink: url `{u}` is not a NATS URL; write e.g. nats://127.0.0.1:4222"
                ));
            }
        }
        let bad_stream = self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if bad_stream {
            return fatal(format!(
                "nats sink: stream `{}` is not a valid stream name; use letters, digits, `_` or `-`",
                self.stream
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 65_536 {
            return fatal("nats sink: max_in_flight must be from 1 to 65536".into());
        }
        if self.ack_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return fatal(
                "nats sink: ack_timeout_ms and connect_timeout_ms must be positive".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return fatal("nats sink: set both user and password, or neither".into());
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|&&m| m).count() > 1 {
            return fatal(
                "nats sink: choose one of token, user/password and credentials_file".into(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return fatal("nats sink: set both tls_cert and tls_key, or neither".into());
        }
        for path in [
            &self.credentials_file,
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                return fatal(format!(
                    "nats sink: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}
