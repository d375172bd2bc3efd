//! Errors of the PostgreSQL source, classified by consequence.

use std::fmt;

/// A field-level copy of a PostgreSQL `ErrorResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// SQLSTATE, e.g. `42704`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "; {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to PostgreSQL.
///
/// [`PgError::is_transient`] answers "retry or stop?": network trouble and a server that
/// restarts are transient (reconnect with backoff, resume from the slot); bad
/// configuration, authentication failures and protocol violations are not.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The DSN could not be parsed.
    #[error("bad dsn: {0}")]
    Dsn(String),
    /// TCP/TLS I/O failed.
    #[error("cannot reach postgresql at {addr}: {source}; check that the server runs and the host/port in the dsn are right")]
    Connect {
        /// host:port tried.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An established connection broke.
    #[error("connection to postgresql lost: {0}")]
    Io(#[from] std::io::Error),
    /// TLS set-up failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Authentication failed or is unsupported.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server answered with an error.
    #[error("postgresql: {0}")]
    Server(ServerError),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A pgoutput message could not be decoded.
    #[error("pgoutput: {0}")]
    Decode(String),
}

impl PgError {
    /// True when reconnecting later may succeed (network loss, server restart or shutdown).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { .. } | PgError::Io(_) => true,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
            // object_in_use (slot still active after a restart of ours)
            PgError::Server(e) => matches!(
                e.code.as_str(),
                "57P01" | "57P02" | "57P03" | "53300" | "55006" | "08006" | "08003"
            ),
            _ => false,
        }
    }

    /// The SQLSTATE when this is a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Server(e) => Some(e.code.as_str()),
            _ => None,
        }
    }
}
