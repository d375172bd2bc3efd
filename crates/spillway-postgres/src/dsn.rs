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

/// A parsed connection string.
///
/// The password never shows: `Debug` and `Display` print `***` for it, and so does
/// [`redact`] for the original text.
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
    /// TCP keepalive on (`keepalives`, libpq's name; default 1).
    pub keepalives: bool,
    /// Seconds of silence before the first keepalive probe (`keepalives_idle`, default 10).
    pub keepalives_idle_secs: u64,
    /// Seconds between probes (`keepalives_interval`, default 5).
    pub keepalives_interval_secs: u64,
    /// Unanswered probes before the connection is dropped (`keepalives_count`, default 3).
    pub keepalives_count: u32,
    /// Linux `TCP_USER_TIMEOUT` in milliseconds: how long sent data may stay
    /// unacknowledged before the connection is dropped (`tcp_user_timeout`, default
    /// 30000; 0 = the kernel's default, about 15 minutes).
    pub tcp_user_timeout_ms: u64,
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

/// `postgres://user:***@host:port/dbname`: the password is never shown.
impl fmt::Display for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        write!(f, "postgres://{}", enc(&self.user))?;
        if self.password.is_some() {
            f.write_str(":***")?;
        }
        write!(f, "@{}/{}", self.addr(), enc(&self.dbname))
    }
}

impl ConnectConfig {
    /// The defaults before a DSN is applied (user from `PGUSER`/`USER`).
    fn defaults(user: String) -> ConnectConfig {
        ConnectConfig {
            host: "localhost".into(),
            port: 5432,
            user,
            password: None,
            dbname: String::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "spillway".into(),
            connect_timeout_secs: 10,
            keepalives: true,
            keepalives_idle_secs: 10,
            keepalives_interval_secs: 5,
            keepalives_count: 3,
            tcp_user_timeout_ms: 30_000,
        }
    }

    /// Parses a URL (`postgres://` or `postgresql://`) or a key/value DSN.
    ///
    /// A `replication=database` parameter (as reference 001's DSN carries) is accepted and
    /// ignored: Spillway opens replication connections itself where it needs them.
    ///
    /// Errors never quote the password, nor a fragment of the text that may belong to it.
    pub fn parse(dsn: &str) -> Result<ConnectConfig, PgError> {
        let mut cfg = ConnectConfig::defaults(
            std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into()),
        );
        parse_into(dsn, &mut cfg, &mut Vec::new())?;
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

/// Parses `dsn` into `cfg`, recording the byte ranges of `dsn` that hold a password in
/// `secrets` (for [`redact`]).
fn parse_into(dsn: &str, cfg: &mut ConnectConfig, secrets: &mut Secrets) -> Result<(), PgError> {
    let trimmed = dsn.trim();
    if trimmed.is_empty() {
        return Err(PgError::Dsn(
            "the dsn is empty; set [source] dsn = \"postgres://user@host:5432/db\"".into(),
        ));
    }
    if let Some(rest) = trimmed
        .strip_prefix("postgres://")
        .or_else(|| trimmed.strip_prefix("postgresql://"))
    {
        parse_url(dsn, rest, cfg, secrets)
    } else if trimmed.contains("://") {
        Err(PgError::Dsn(format!(
            "`{}` is not a postgres url; it must start with postgres:// or postgresql://",
            redact_unparsed(trimmed)
        )))
    } else if trimmed.contains('=') {
        parse_kv(dsn, trimmed, cfg, secrets)
    } else {
        Err(PgError::Dsn(format!(
            "`{}` is neither a postgres:// url nor key=value pairs",
            redact_unparsed(trimmed)
        )))
    }
}

/// Byte ranges of a DSN's text that are a password.
type Secrets = Vec<std::ops::Range<usize>>;

/// Where `part` (a sub-slice of `base`) lies in `base`.
fn span(base: &str, part: &str) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Replaces every password in a DSN (URL or key/value) with `***`, for messages.
///
/// A DSN that parses is redacted exactly where the parser found a password: in the user
/// info of a URL (`@`, `:` and anything else in it, %-encoded or not), a `password=`
/// query parameter, a `password=` key/value pair (quoted, with spaces and escapes). A DSN
/// that does not parse is redacted generously instead: the user info up to the last `@`,
/// and everything from the first `password` on.
pub fn redact(dsn: &str) -> String {
    let mut secrets = Secrets::new();
    let mut scratch = ConnectConfig::defaults(String::new());
    if parse_into(dsn, &mut scratch, &mut secrets).is_err() {
        return redact_unparsed(dsn);
    }
    secrets.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(dsn.len());
    let mut at = 0;
    for r in secrets {
        if r.start < at {
            continue;
        }
        out.push_str(&dsn[at..r.start]);
        out.push_str("***");
        at = r.end;
    }
    out.push_str(&dsn[at..]);
    out
}

/// The generous redaction of a string that is not a valid DSN.
fn redact_unparsed(dsn: &str) -> String {
    let (head, cut) = match dsn.to_ascii_lowercase().find("password") {
        Some(i) => (&dsn[..i], true),
        None => (dsn, false),
    };
    let mut out = match head.find("://") {
        Some(scheme_end) => {
            let rest = &head[scheme_end + 3..];
            match rest.rfind('@') {
                Some(at) => format!("{}***{}", &head[..scheme_end + 3], &rest[at..]),
                None => head.to_string(),
            }
        }
        None => match head.rfind('@') {
            Some(at) if !head.contains('=') => format!("***{}", &head[at..]),
            _ => head.to_string(),
        },
    };
    if cut {
        out.push_str("password=***");
    }
    out
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

/// The error for a URL part that may hold a piece of a password: never quoted.
fn hidden(what: &str) -> PgError {
    PgError::Dsn(format!(
        "the {what} of the dsn is invalid (not shown: it may hold part of the password); percent-encode `/`, `?`, `&` and `#` in a password (%2F, %3F, %26, %23)"
    ))
}

fn parse_url(
    dsn: &str,
    rest: &str,
    cfg: &mut ConnectConfig,
    secrets: &mut Secrets,
) -> Result<(), PgError> {
    // Anything before the last `@` may be part of a password (an unencoded `/` or `?` in
    // it ends the host part early): errors about such text do not quote it.
    let last_at = rest.rfind('@').map(|i| span(dsn, &rest[i..]).start);
    let maybe_secret = |part: &str| last_at.is_some_and(|at| span(dsn, part).start < at);
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
                    secrets.push(span(dsn, p));
                    cfg.user = decode(u, "user")?;
                    cfg.password = Some(decode(p, "password")?);
                }
                None => cfg.user = decode(userinfo, "user")?,
            }
            hp
        }
        None => {
            if authority.contains(':')
                && (path.contains('@') || query.is_some_and(at_before_equals))
            {
                // `postgres://user:pa/ss@host/db`: the user info ends early.
                if let Some((_, p)) = authority.split_once(':') {
                    secrets.push(span(dsn, p));
                }
                if let Some(q) = query {
                    secrets.push(span(dsn, q));
                }
                if !path.is_empty() {
                    secrets.push(span(dsn, path));
                }
                return Err(hidden("host part"));
            }
            authority
        }
    };
    if !hostport.is_empty() {
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            match h.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => return Err(PgError::Dsn("unclosed `[` in the dsn host".into())),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            cfg.host = decode(host, "host")?;
        }
        if let Some(p) = port {
            cfg.port =
                parse_port(p).map_err(|e| if maybe_secret(p) { hidden("port") } else { e })?;
        }
    }
    if !path.is_empty() {
        cfg.dbname = decode(path, "database name")?;
    }
    if let Some(q) = query {
        let mut after_password = false;
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            // After an unencoded `&` in a password, its rest looks like another pair.
            let quiet = after_password || maybe_secret(pair);
            let Some((k, v)) = pair.split_once('=') else {
                return Err(if quiet {
                    hidden("query")
                } else {
                    PgError::Dsn(format!(
                        "dsn parameter `{pair}` has no value; write key=value"
                    ))
                });
            };
            let key = decode(k, "parameter name")?;
            after_password = key == "password";
            if after_password {
                secrets.push(span(dsn, v));
            }
            let value = decode(v, &key)?;
            set_param(cfg, &key, &value).map_err(|e| if quiet { hidden("query") } else { e })?;
        }
    }
    Ok(())
}

/// `x@y` or `x@y=z`: an `@` before any `=` (in the query of a URL whose authority has
/// none), which only an unencoded `?` in a password produces.
fn at_before_equals(q: &str) -> bool {
    match (q.find('@'), q.find('=')) {
        (Some(at), Some(eq)) => at < eq,
        (Some(_), None) => true,
        _ => false,
    }
}

fn parse_kv(
    dsn: &str,
    s: &str,
    cfg: &mut ConnectConfig,
    secrets: &mut Secrets,
) -> Result<(), PgError> {
    let base = span(dsn, s).start;
    let mut chars = s.char_indices().peekable();
    // The previous pair was an unquoted password: a space in it makes its rest look like
    // more keys, which errors must not quote.
    let mut after_password = false;
    loop {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(PgError::Dsn(if after_password {
                "the dsn has text after the password that is not key=value; quote a password with spaces: password='…'".into()
            } else {
                format!("dsn key `{key}` has no value; write {key}=value")
            }));
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let value_start = chars.peek().map(|(i, _)| *i).unwrap_or(s.len());
        let mut value = String::new();
        let mut quoted = false;
        if chars.peek().map(|(_, c)| *c) == Some('\'') {
            quoted = true;
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
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
                if key == "password" {
                    secrets.push(base + value_start..base + s.len());
                }
                return Err(PgError::Dsn(format!(
                    "unterminated quote in the value of `{key}`"
                )));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let value_end = chars.peek().map(|(i, _)| *i).unwrap_or(s.len());
        if key == "password" {
            secrets.push(base + value_start..base + value_end);
        }
        let quiet = after_password;
        after_password = key == "password" && !quoted;
        set_param(cfg, &key, &value).map_err(|e| {
            if quiet {
                PgError::Dsn("the dsn has text after the password that is not a known key=value; quote a password with spaces: password='…'".into())
            } else {
                e
            }
        })?;
    }
}

fn parse_port(p: &str) -> Result<u16, PgError> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PgError::Dsn(format!("port `{p}` is not a number between 1 and 65535")))
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str, unit: &str) -> Result<T, PgError> {
    value
        .parse()
        .map_err(|_| PgError::Dsn(format!("{key} `{value}` is not a number of {unit}")))
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
        "connect_timeout" => cfg.connect_timeout_secs = parse_num(key, value, "seconds")?,
        "keepalives" => {
            cfg.keepalives = match value {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(PgError::Dsn(format!(
                        "keepalives `{value}` must be 1 (on) or 0 (off)"
                    )))
                }
            }
        }
        "keepalives_idle" => cfg.keepalives_idle_secs = parse_num(key, value, "seconds")?,
        "keepalives_interval" => cfg.keepalives_interval_secs = parse_num(key, value, "seconds")?,
        "keepalives_count" => cfg.keepalives_count = parse_num(key, value, "probes")?,
        "tcp_user_timeout" => cfg.tcp_user_timeout_ms = parse_num(key, value, "milliseconds")?,
        // Accepted and ignored: Spillway chooses per connection.
        "replication" | "options" | "target_session_attrs" | "sslcompression" => {}
        other => {
            return Err(PgError::Dsn(format!(
                "unknown dsn parameter `{other}`; supported: host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout, keepalives, keepalives_idle, keepalives_interval, keepalives_count, tcp_user_timeout"
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
        assert_eq!(
            redact("postgres://u:p@ss@h:5432/db?sslmode=disable"),
            "postgres://u:***@h:5432/db?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://u@h/db?sslmode=disable&password=p@ss&application_name=x"),
            "postgres://u@h/db?sslmode=disable&password=***&application_name=x"
        );
        assert_eq!(
            redact("host=h password = 'a b\\' c' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(
            redact("mysql://u:p@ss@h/db?password=x@y"),
            "mysql://***@h/db?password=***"
        );
    }

    /// Pieces (3+ letters or digits) of `secret` that `shown` contains.
    fn leaked<'a>(secret: &'a str, shown: &str) -> Vec<&'a str> {
        secret
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| p.len() >= 3 && shown.contains(p))
            .collect()
    }

    #[test]
    fn no_password_ever_shows() {
        // (dsn, the password as its writer meant it)
        let cases = [
            ("postgres://alice:Kq7@Zx9@db.example:5432/shop", "Kq7@Zx9"),
            ("postgres://alice:Kq7%40Zx9@db.example/shop", "Kq7@Zx9"),
            ("postgresql://alice:Kq7:Zx9@db.example/shop", "Kq7:Zx9"),
            (
                "postgres://alice@db.example/shop?password=Kq7@Zx9",
                "Kq7@Zx9",
            ),
            (
                "postgres://db.example:5432/shop?password=Kq7@Zx9",
                "Kq7@Zx9",
            ),
            (
                "postgres://alice@db/shop?password=Kq7%26Zx9&sslmode=disable",
                "Kq7&Zx9",
            ),
            (
                "postgres://alice@db/shop?password=Kq7&Zx9&sslmode=disable",
                "Kq7&Zx9",
            ),
            ("postgres://alice@db/shop?password=Kq7&Zx9=1", "Kq7&Zx9=1"),
            ("postgres://alice:Kq7/Zx9@db.example/shop", "Kq7/Zx9"),
            ("postgres://alice:Kq7?Zx9@db.example/shop", "Kq7?Zx9"),
            (
                "postgres://alice:Kq7?Zx9=Wv5@db.example/shop",
                "Kq7?Zx9=Wv5",
            ),
            (
                "postgres://alice:123?sslmode=Zx9@db.example/shop",
                "123?sslmode=Zx9",
            ),
            ("postgres://alice:Kq7#Zx9@db.example/shop", "Kq7#Zx9"),
            ("postgres://alice:Kq7@Zx9@db.example:99999/shop", "Kq7@Zx9"),
            ("postgres://alice:Kq7@Zx9@db/shop?sslmode=maybe", "Kq7@Zx9"),
            ("mysql://alice:Kq7@Zx9@db/shop", "Kq7@Zx9"),
            ("alice:Kq7@Zx9@db", "Kq7@Zx9"),
            ("host=db password=Kq7@Zx9 user=alice", "Kq7@Zx9"),
            ("host=db password='Kq7 Zx9' user=alice", "Kq7 Zx9"),
            ("host=db password='Kq7\\'Zx9' user=alice", "Kq7'Zx9"),
            ("host=db password = Kq7@Zx9", "Kq7@Zx9"),
            ("host=db password=Kq7 Zx9 user=alice", "Kq7 Zx9"),
            ("host=db password=Kq7 Zx9=Wv5 user=alice", "Kq7 Zx9=Wv5"),
            ("host=db password='Kq7 Zx9", "Kq7 Zx9"),
            ("host=db port=x password=Kq7@Zx9", "Kq7@Zx9"),
        ];
        for (dsn, secret) in cases {
            let r = redact(dsn);
            assert!(leaked(secret, &r).is_empty(), "redact({dsn:?}) = {r:?}");
            match ConnectConfig::parse(dsn) {
                Ok(c) => {
                    for shown in [format!("{c:?}"), c.to_string(), c.addr()] {
                        assert!(leaked(secret, &shown).is_empty(), "{dsn:?} shows {shown:?}");
                    }
                    if c.password.as_deref() == Some(secret) {
                        assert!(c.to_string().contains(":***@"), "{c}");
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(leaked(secret, &e).is_empty(), "{dsn:?}: {e}");
                    assert!(!e.contains('\n'), "{e}");
                }
            }
        }
        // The ones that parse give the password as meant.
        for (dsn, secret) in [
            cases[0], cases[1], cases[2], cases[3], cases[4], cases[5], cases[12], cases[17],
            cases[18], cases[19], cases[20],
        ] {
            assert_eq!(
                ConnectConfig::parse(dsn).unwrap().password.as_deref(),
                Some(secret),
                "{dsn}"
            );
        }
        // An unencoded `/` or `?` in a password is refused, not misread as host and port.
        for (dsn, _) in [cases[8], cases[9], cases[10]] {
            let e = ConnectConfig::parse(dsn).unwrap_err().to_string();
            assert!(e.contains("percent-encode"), "{e}");
        }
    }

    #[test]
    fn keepalive_parameters() {
        let c = ConnectConfig::parse("postgres://u@h/db").unwrap();
        assert!(c.keepalives);
        assert_eq!(
            (
                c.keepalives_idle_secs,
                c.keepalives_interval_secs,
                c.keepalives_count,
                c.tcp_user_timeout_ms
            ),
            (10, 5, 3, 30_000)
        );
        let c = ConnectConfig::parse(
            "postgres://u@h/db?keepalives=0&keepalives_idle=60&keepalives_interval=7&keepalives_count=9&tcp_user_timeout=0",
        )
        .unwrap();
        assert!(!c.keepalives);
        assert_eq!(
            (
                c.keepalives_idle_secs,
                c.keepalives_interval_secs,
                c.keepalives_count,
                c.tcp_user_timeout_ms
            ),
            (60, 7, 9, 0)
        );
        let e = ConnectConfig::parse("host=h keepalives=yes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keepalives `yes`"), "{e}");
    }
}
