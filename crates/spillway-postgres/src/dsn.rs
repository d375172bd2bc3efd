//! Connection strings: `postgres://user:pw@host:port/db?sslmode=require` URLs and
//! libpq-style `host=… port=… user=… dbname=…` key/value strings.

use crate::PgError;
use std::fmt;
use std::path::PathBuf;

/// How TLS is negotiated, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Try plaintext first; libpq semantics are approximated as `Prefer`.
    Allow,
    /// TLS if the server offers it, plaintext otherwise (libpq's default).
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified against `sslrootcert`.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, PgError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(PgError::Dsn(format!(
                "unknown sslmode `{other}`; use disable, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }
}

/// A parsed connection string. The password is kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role name.
    pub user: String,
    /// Password, if any (falls back to `PGPASSWORD`).
    pub password: Option<String>,
    /// Database name (defaults to the user name).
    pub dbname: String,
    /// TLS negotiation mode.
    pub sslmode: SslMode,
    /// CA bundle for `verify-ca` / `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// `application_name` reported to the server.
    pub application_name: String,
    /// Connect timeout.
    pub connect_timeout_secs: u64,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

impl ConnectConfig {
    /// Parses a URL (`postgres://` or `postgresql://`) or a key/value DSN.
    ///
    /// A `replication=database` parameter (as reference 001's DSN carries) is accepted and
    /// ignored: Spillway opens replication connections itself where it needs them.
    pub fn parse(dsn: &str) -> Result<ConnectConfig, PgError> {
        let dsn = dsn.trim();
        if dsn.is_empty() {
            return Err(PgError::Dsn(
                "the dsn is empty; set [source] dsn = \"postgres://user@host:5432/db\"".into(),
            ));
        }
        let mut cfg = ConnectConfig {
            host: "localhost".into(),
            port: 5432,
            user: std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into()),
            password: None,
            dbname: String::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "spillway".into(),
            connect_timeout_secs: 10,
        };
        if let Some(rest) = dsn
            .strip_prefix("postgres://")
            .or_else(|| dsn.strip_prefix("postgresql://"))
        {
            parse_url(rest, &mut cfg)?;
        } else if dsn.contains("://") {
            return Err(PgError::Dsn(format!(
                "`{}` is not a postgres url; it must start with postgres:// or postgresql://",
                redact(dsn)
            )));
        } else if dsn.contains('=') {
            parse_kv(dsn, &mut cfg)?;
        } else {
            return Err(PgError::Dsn(format!(
                "`{}` is neither a postgres:// url nor key=value pairs",
                redact(dsn)
            )));
        }
        if cfg.dbname.is_empty() {
            cfg.dbname = cfg.user.clone();
        }
        if cfg.password.is_none() {
            cfg.password = std::env::var("PGPASSWORD").ok();
        }
        Ok(cfg)
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Replaces a password in a URL-ish string with `***` for messages.
pub fn redact(dsn: &str) -> String {
    if let Some(scheme_end) = dsn.find("://") {
        let after = &dsn[scheme_end + 3..];
        if let Some(at) = after.find('@') {
            let userinfo = &after[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &dsn[..scheme_end + 3],
                    &userinfo[..colon],
                    &after[at..]
                );
            }
        }
        return dsn.to_string();
    }
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn decode(s: &str, what: &str) -> Result<String, PgError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            PgError::Dsn(format!(
                "the {what} in the dsn is not valid utf-8 after %-decoding"
            ))
        })
}

fn parse_url(rest: &str, cfg: &mut ConnectConfig) -> Result<(), PgError> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, p),
        None => (main, ""),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    cfg.user = decode(u, "user")?;
                    cfg.password = Some(decode(p, "password")?);
                }
                None => cfg.user = decode(userinfo, "user")?,
            }
            hp
        }
        None => authority,
    };
    if !hostport.is_empty() {
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            match h.split_once(']') {
                Some((h, p)) => (h.to_string(), p.strip_prefix(':')),
                None => return Err(PgError::Dsn("unclosed `[` in the dsn host".into())),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if !host.is_empty() {
            cfg.host = decode(&host, "host")?;
        }
        if let Some(p) = port {
            cfg.port = parse_port(p)?;
        }
    }
    if !path.is_empty() {
        cfg.dbname = decode(path, "database name")?;
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                PgError::Dsn(format!(
                    "dsn parameter `{pair}` has no value; write key=value"
                ))
            })?;
            set_param(cfg, k, &decode(v, k)?)?;
        }
    }
    Ok(())
}

fn parse_kv(s: &str, cfg: &mut ConnectConfig) -> Result<(), PgError> {
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(PgError::Dsn(format!(
                "dsn key `{key}` has no value; write {key}=value"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(PgError::Dsn(format!(
                    "unterminated quote in the value of `{key}`"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        set_param(cfg, &key, &value)?;
    }
}

fn parse_port(p: &str) -> Result<u16, PgError> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PgError::Dsn(format!("port `{p}` is not a number between 1 and 65535")))
}

fn set_param(cfg: &mut ConnectConfig, key: &str, value: &str) -> Result<(), PgError> {
    match key {
        "host" | "hostaddr" => cfg.host = value.to_string(),
        "port" => cfg.port = parse_port(value)?,
        "user" => cfg.user = value.to_string(),
        "password" => cfg.password = Some(value.to_string()),
        "dbname" => cfg.dbname = value.to_string(),
        "sslmode" => cfg.sslmode = SslMode::parse(value)?,
        "sslrootcert" => cfg.sslrootcert = Some(PathBuf::from(value)),
        "application_name" => cfg.application_name = value.to_string(),
        "connect_timeout" => {
            cfg.connect_timeout_secs = value.parse().map_err(|_| {
                PgError::Dsn(format!("connect_timeout `{value}` is not a number of seconds"))
            })?
        }
        // Accepted and ignored: Spillway chooses per connection.
        "replication" | "options" | "target_session_attrs" | "sslcompression" => {}
        other => {
            return Err(PgError::Dsn(format!(
                "unknown dsn parameter `{other}`; supported: host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_everything() {
        let c = ConnectConfig::parse(
            "postgres://alice:p%40ss@db.example:6543/shop?sslmode=require&replication=database",
        )
        .unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.dbname, "shop");
        assert_eq!(c.sslmode, SslMode::Require);
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn key_value() {
        let c =
            ConnectConfig::parse("host=127.0.0.1 port=5433 user=bob dbname='my db' password='a b'")
                .unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5433);
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.password.as_deref(), Some("a b"));
    }

    #[test]
    fn bad_inputs_are_one_line_errors() {
        for bad in [
            "",
            "mysql://x@y/z",
            "postgres://u@h:99999/db",
            "postgres://u@h/db?sslmode=maybe",
            "postgres://u@h/db?color=blue",
            "hello",
            "host=x port",
        ] {
            let e = ConnectConfig::parse(bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.starts_with("bad dsn"), "{e}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("host=h password=secret"), "host=h password=***");
    }
}
