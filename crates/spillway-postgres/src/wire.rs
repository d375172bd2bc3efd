//! The PostgreSQL wire protocol, as much of it as Spillway needs: start-up with TLS and
//! password/MD5/SCRAM-SHA-256 authentication, the simple query protocol, and the
//! CopyBoth sub-protocol that carries logical replication.
//!
//! Frontend messages are written with `postgres-protocol`; backend messages are framed
//! here (that crate does not know `CopyBothResponse`). Reading is cancel-safe: bytes read
//! stay in `rbuf` until a whole message is there, so `recv` can sit in a `select!`.

use crate::dsn::{ConnectConfig, SslMode};
use crate::{PgError, ServerError};
use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message: its tag byte and body (without the length word).
#[derive(Debug)]
pub(crate) struct RawMessage {
    pub(crate) tag: u8,
    pub(crate) body: Bytes,
}

/// A row of a simple query's result, every column in text form.
pub type Row = Vec<Option<String>>;

/// An authenticated connection, idle and ready for a query.
pub struct PgConnection {
    stream: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    params: HashMap<String, String>,
    tls: bool,
}

/// Session settings that fix the text form of values (see `spillway_pgoutput::value`).
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

impl PgConnection {
    /// Connects and authenticates. With `replication` the session is a walsender
    /// (`replication=database`), which accepts both SQL and replication commands.
    pub async fn connect(cfg: &ConnectConfig, replication: bool) -> Result<PgConnection, PgError> {
        let addr = cfg.addr();
        let timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
            .await
            .map_err(|_| PgError::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| PgError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true).ok();
        tune_socket(&tcp, cfg);
        let (stream, tls): (Box<dyn Io>, bool) = if cfg.sslmode == SslMode::Disable {
            (Box::new(tcp), false)
        } else {
            negotiate_tls(tcp, cfg).await?
        };
        let mut conn = PgConnection {
            stream,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            params: HashMap::new(),
            tls,
        };
        tokio::time::timeout(timeout, conn.startup(cfg, replication))
            .await
            .map_err(|_| PgError::Connect {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to the start-up message",
                ),
            })??;
        Ok(conn)
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A parameter the server reported at start-up (`server_version`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server's major version number, e.g. 15.
    pub fn server_major_version(&self) -> Option<u32> {
        let v = self.parameter("server_version")?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    async fn startup(&mut self, cfg: &ConnectConfig, replication: bool) -> Result<(), PgError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("application_name", cfg.application_name.as_str()),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        params.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(params, &mut self.wbuf)?;
        self.send().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.recv().await?;
            match msg.tag {
                b'R' => {
                    let mut body = msg.body;
                    if body.len() < 4 {
                        return Err(PgError::Protocol("short authentication message".into()));
                    }
                    let kind = body.get_i32();
                    match kind {
                        0 => {}
                        3 => {
                            let pw = password(cfg)?;
                            frontend::password_message(pw.as_bytes(), &mut self.wbuf)?;
                            self.send().await?;
                        }
                        5 => {
                            let pw = password(cfg)?;
                            if body.len() < 4 {
                                return Err(PgError::Protocol("short md5 salt".into()));
                            }
                            let mut salt = [0u8; 4];
                            body.copy_to_slice(&mut salt);
                            let hash = postgres_protocol::authentication::md5_hash(
                                cfg.user.as_bytes(),
                                pw.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                            self.send().await?;
                        }
                        10 => {
                            let mechanisms: Vec<&[u8]> =
                                body.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
                            if !mechanisms.contains(&SCRAM_SHA_256.as_bytes()) {
                                return Err(PgError::Auth(
                                    "the server offers no SASL mechanism spillway supports (SCRAM-SHA-256)".into(),
                                ));
                            }
                            let pw = password(cfg)?;
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                s.message(),
                                &mut self.wbuf,
                            )?;
                            self.send().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Protocol("SASL continue without SASL start".into())
                            })?;
                            s.update(&body)
                                .map_err(|e| PgError::Auth(format!("scram: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.wbuf)?;
                            self.send().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Protocol("SASL final without SASL start".into())
                            })?;
                            s.finish(&body).map_err(|e| {
                                PgError::Auth(format!("the server's scram signature is invalid: {e}"))
                            })?;
                        }
                        other => {
                            return Err(PgError::Auth(format!(
                                "the server asks for authentication method {other}, which spillway does not support; use password, md5 or scram-sha-256 in pg_hba.conf"
                            )))
                        }
                    }
                }
                b'S' => {
                    let (k, v) = parameter_status(&msg.body)?;
                    self.params.insert(k, v);
                }
                b'K' | b'N' => {}
                b'Z' => return Ok(()),
                b'E' => {
                    let e = parse_error(&msg.body);
                    return Err(match e.code.as_str() {
                        "28P01" | "28000" => PgError::Auth(e.to_string()),
                        _ => PgError::Server(e),
                    });
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` during start-up",
                        other as char
                    )))
                }
            }
        }
    }

    /// Runs one statement with the simple query protocol and returns the rows of its
    /// (last) result set, every value in text form.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, PgError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.send().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let msg = self.recv().await?;
            match msg.tag {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_data_row(&msg.body)?),
                b'C' | b'I' | b'N' | b'S' => {}
                b'E' => error = Some(parse_error(&msg.body)),
                b'Z' => break,
                b'W' | b'H' | b'G' => {
                    return Err(PgError::Protocol(format!(
                        "`{sql}` started a copy; use the replication stream for that"
                    )))
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` in a query result",
                        other as char
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(PgError::Server(e)),
            None => Ok(rows),
        }
    }

    /// Sends a query that is expected to switch into CopyBoth mode (`START_REPLICATION`).
    pub(crate) async fn start_copy_both(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.send().await?;
        loop {
            let msg = self.recv().await?;
            match msg.tag {
                b'W' => return Ok(()),
                b'N' | b'S' => {}
                b'E' => {
                    let e = parse_error(&msg.body);
                    // Drain to ReadyForQuery so the caller sees the server's error, not ours.
                    while self.recv().await?.tag != b'Z' {}
                    return Err(PgError::Server(e));
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "expected CopyBothResponse, got `{}`",
                        other as char
                    )))
                }
            }
        }
    }

    /// Reads one backend message. Cancel-safe.
    ///
    /// A length word outside `4..=MAX_BACKEND_MESSAGE_LEN` is a protocol error, and the
    /// buffer grows with the bytes that really arrive (at most [`RECV_GROW_STEP`] ahead),
    /// so a corrupt length can neither make the process allocate gigabytes up front nor
    /// wait for a frame PostgreSQL could never have sent.
    pub(crate) async fn recv(&mut self) -> Result<RawMessage, PgError> {
        loop {
            if self.rbuf.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]])
                        as usize;
                check_frame_len(self.rbuf[0], len)?;
                if self.rbuf.len() > len {
                    let mut frame = self.rbuf.split_to(len + 1);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(RawMessage {
                        tag,
                        body: frame.freeze(),
                    });
                }
                let missing = len + 1 - self.rbuf.len();
                self.rbuf.reserve(missing.min(RECV_GROW_STEP));
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8192 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(PgError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// Appends a CopyData message to the write buffer.
    pub(crate) fn queue_copy_data(&mut self, payload: &[u8]) {
        use bytes::BufMut;
        self.wbuf.put_u8(b'd');
        self.wbuf.put_u32((payload.len() + 4) as u32);
        self.wbuf.put_slice(payload);
    }

    /// Appends already-encoded frontend bytes to the write buffer.
    pub(crate) fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    pub(crate) async fn send(&mut self) -> Result<(), PgError> {
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Sends Terminate and closes.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.send().await;
        let _ = self.stream.shutdown().await;
    }
}

/// The largest length word (body + the 4 bytes of the word itself) accepted from the
/// server: 1 GiB - 1 + 4.
///
/// Why this bound: every backend message is assembled in one PostgreSQL `StringInfo`,
/// which cannot grow past `MaxAllocSize` (1 GiB - 1; "Cannot enlarge string buffer"
/// otherwise). That holds for the walsender too: the XLogData header and the whole
/// pgoutput message (a row with several large TOASTed values included) are built in one
/// such buffer before they are sent as one CopyData message. So no server sends a longer
/// message; anything above is a corrupt or hostile stream.
pub(crate) const MAX_BACKEND_MESSAGE_LEN: usize = 0x3fff_ffff + 4;

/// How far ahead of the bytes received the read buffer grows for a long message.
const RECV_GROW_STEP: usize = 8 << 20;

/// Validates the length word of a backend message (`tag` for the error message).
fn check_frame_len(tag: u8, len: usize) -> Result<(), PgError> {
    if len < 4 {
        return Err(PgError::Protocol(format!(
            "message `{}` has length {len}, below the minimum of 4",
            tag.escape_ascii()
        )));
    }
    if len > MAX_BACKEND_MESSAGE_LEN {
        return Err(PgError::Protocol(format!(
            "message `{}` claims {len} bytes, more than the {MAX_BACKEND_MESSAGE_LEN} PostgreSQL can send; the stream is corrupt",
            tag.escape_ascii()
        )));
    }
    Ok(())
}

fn password(cfg: &ConnectConfig) -> Result<&str, PgError> {
    cfg.password.as_deref().ok_or_else(|| {
        PgError::Auth(format!(
            "the server wants a password for role `{}`; put it in the dsn (postgres://user:PASSWORD@host/db) or PGPASSWORD",
            cfg.user
        ))
    })
}

/// TCP keepalive and, on Linux, `TCP_USER_TIMEOUT`, as the dsn says (see
/// [`ConnectConfig`]): a peer that vanished without a FIN or RST (a host that lost power,
/// a network partition) then fails the socket in about half a minute instead of the
/// kernel's defaults (two hours of silence for keepalive, ~15 minutes of retransmissions
/// for data in flight). A socket option the platform refuses is logged, not fatal.
fn tune_socket(tcp: &TcpStream, cfg: &ConnectConfig) {
    let sock = socket2::SockRef::from(tcp);
    if cfg.keepalives {
        let params = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(cfg.keepalives_idle_secs.max(1)))
            .with_interval(Duration::from_secs(cfg.keepalives_interval_secs.max(1)));
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        let params = params.with_retries(cfg.keepalives_count.max(1));
        if let Err(e) = sock.set_tcp_keepalive(&params) {
            tracing::warn!(error = %e, addr = %cfg.addr(), "cannot enable tcp keepalive");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if cfg.tcp_user_timeout_ms > 0 {
        let t = Duration::from_millis(cfg.tcp_user_timeout_ms);
        if let Err(e) = sock.set_tcp_user_timeout(Some(t)) {
            tracing::warn!(error = %e, addr = %cfg.addr(), "cannot set TCP_USER_TIMEOUT");
        }
    }
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    cfg: &ConnectConfig,
) -> Result<(Box<dyn Io>, bool), PgError> {
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let config = crate::tls::client_config(cfg)?;
            let name = crate::tls::server_name(cfg)?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                PgError::Tls(format!(
                    "handshake with {} failed: {e}; check sslmode and sslrootcert",
                    cfg.addr()
                ))
            })?;
            Ok((Box::new(tls), true))
        }
        b'N' => match cfg.sslmode {
            SslMode::Allow | SslMode::Prefer => Ok((Box::new(tcp), false)),
            _ => Err(PgError::Tls(format!(
                "the server at {} does not accept tls but the dsn says sslmode={}; enable ssl on the server or use sslmode=prefer",
                cfg.addr(),
                match cfg.sslmode {
                    SslMode::Require => "require",
                    SslMode::VerifyCa => "verify-ca",
                    _ => "verify-full",
                }
            ))),
        },
        other => Err(PgError::Protocol(format!(
            "unexpected answer `{}` to the ssl request",
            other as char
        ))),
    }
}

fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), PgError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| PgError::Protocol("missing string terminator".into()))?;
    let s = std::str::from_utf8(&buf[..end])
        .map_err(|_| PgError::Protocol("invalid utf-8 from the server".into()))?;
    Ok((s, &buf[end + 1..]))
}

fn parameter_status(body: &[u8]) -> Result<(String, String), PgError> {
    let (k, rest) = cstr(body)?;
    let (v, _) = cstr(rest)?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses an ErrorResponse/NoticeResponse body; never fails (missing fields stay empty).
pub(crate) fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Ok((value, tail)) = cstr(tail) else { break };
        match field {
            b'C' => e.code = value.to_string(),
            b'M' => e.message = value.to_string(),
            b'D' => e.detail = Some(value.to_string()),
            b'H' => e.hint = Some(value.to_string()),
            _ => {}
        }
        rest = tail;
    }
    e
}

fn parse_data_row(body: &[u8]) -> Result<Row, PgError> {
    let short = || PgError::Protocol("truncated DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(short());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(short());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            if b.len() < len {
                return Err(short());
            }
            row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
            b.advance(len);
        }
    }
    Ok(row)
}

/// Quotes an identifier for SQL (`"a""b"`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (`'it''s'`).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields() {
        let body = b"SERROR\0C42704\0Mslot \"x\" does not exist\0HCreate it.\0\0";
        let e = parse_error(body);
        assert_eq!(e.code, "42704");
        assert_eq!(e.message, "slot \"x\" does not exist");
        assert_eq!(e.hint.as_deref(), Some("Create it."));
        // garbage never panics
        let _ = parse_error(b"C");
        let _ = parse_error(b"");
    }

    #[test]
    fn data_rows() {
        let mut body = vec![0, 2, 0, 0, 0, 1, b'x', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_data_row(&body).unwrap(), vec![Some("x".into()), None]);
        body.truncate(6);
        assert!(parse_data_row(&body).is_err());
    }

    /// A connection over an in-memory pipe; the other end plays the server.
    fn piped() -> (PgConnection, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let conn = PgConnection {
            stream: Box::new(ours),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            params: HashMap::new(),
            tls: false,
        };
        (conn, theirs)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn frames_arrive_whole_even_in_pieces() {
        rt().block_on(async {
            let (mut conn, mut server) = piped();
            let mut frame = vec![b'd', 0, 0, 0, 9];
            frame.extend_from_slice(b"hello");
            let writer = tokio::spawn(async move {
                for b in frame {
                    server.write_all(&[b]).await.unwrap();
                }
                server
            });
            let msg = conn.recv().await.unwrap();
            assert_eq!((msg.tag, &msg.body[..]), (b'd', &b"hello"[..]));
            drop(writer.await.unwrap());
        });
    }

    #[test]
    fn a_length_beyond_what_postgresql_can_send_is_a_protocol_error() {
        rt().block_on(async {
            for len in [u32::MAX, (MAX_BACKEND_MESSAGE_LEN + 1) as u32, 3] {
                let (mut conn, mut server) = piped();
                let mut header = vec![b'd'];
                header.extend_from_slice(&len.to_be_bytes());
                server.write_all(&header).await.unwrap();
                let e = tokio::time::timeout(Duration::from_secs(5), conn.recv())
                    .await
                    .expect("an error at once, not a wait for the claimed bytes")
                    .unwrap_err();
                assert!(matches!(e, PgError::Protocol(_)), "{e}");
                let text = e.to_string();
                assert!(!text.contains('\n'), "{text}");
                assert!(text.contains(&len.to_string()), "{text}");
                // Nothing was reserved for the claimed length.
                assert!(conn.rbuf.capacity() < 1 << 30, "{}", conn.rbuf.capacity());
            }
        });
    }

    #[test]
    fn a_long_frame_grows_the_buffer_with_the_bytes_that_arrive() {
        rt().block_on(async {
            let (mut conn, mut server) = piped();
            // Claims 512 MiB (allowed), sends only the header and a few bytes.
            let mut header = vec![b'd'];
            header.extend_from_slice(&((512u32 << 20) + 4).to_be_bytes());
            header.extend_from_slice(b"abc");
            server.write_all(&header).await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(200), conn.recv()).await;
            assert!(read.is_err(), "the frame is incomplete");
            assert!(
                conn.rbuf.capacity() <= 2 * RECV_GROW_STEP,
                "reserved {} bytes for 8 received",
                conn.rbuf.capacity()
            );
        });
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
