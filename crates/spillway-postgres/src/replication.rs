//! The logical replication stream: `START_REPLICATION … LOGICAL` over a walsender
//! connection, XLogData and keepalive framing, and standby status updates.
//!
//! Progress, precisely named:
//!
//! ```text
//!   walsender ──XLogData(wal_start, wal_end)──▶ reader ──append──▶ change log ──fsync──┐
//!       ▲                                                                                 │
//!       └──── StandbyStatusUpdate(flush = end_lsn of the last durable commit) ◀──────────┘
//! ```
//!
//! * `flush_lsn` sent to PostgreSQL is only ever the `end_lsn` of a transaction whose last
//!   record the change log holds durably, or — when nothing is in flight — the `wal_end` of
//!   a keepalive (everything before it was either sent and is durable, or was filtered out
//!   by the publication). PostgreSQL keeps the slot's `confirmed_flush_lsn` there, so after
//!   a crash it resends exactly what may not have reached the disk.
//! * The codec below is sans-IO and total: malformed frames are errors.

use crate::wire::PgConnection;
use crate::PgError;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// One message of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of decoded WAL: one pgoutput message.
    XLogData {
        /// WAL position of the record this message was decoded from.
        wal_start: u64,
        /// Current end of WAL on the server.
        wal_end: u64,
        /// Server clock, µs since the Unix epoch.
        server_time_us: i64,
        /// The pgoutput message.
        data: Bytes,
    },
    /// Keepalive: the walsender has sent everything up to `wal_end`.
    Keepalive {
        /// Current end of WAL on the server.
        wal_end: u64,
        /// Server clock, µs since the Unix epoch.
        server_time_us: i64,
        /// The server wants a status update now (or it will time out the connection).
        reply_requested: bool,
    },
}

/// Decodes the payload of one CopyData message from the walsender.
pub fn decode_copy_data(mut body: Bytes) -> Result<ReplicationMessage, PgError> {
    let bad = |what: &str| PgError::Protocol(format!("malformed replication message: {what}"));
    if body.is_empty() {
        return Err(bad("empty"));
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(bad("short XLogData header"));
            }
            let wal_start = body.get_u64();
            let wal_end = body.get_u64();
            let t = body.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time_us: t.saturating_add(PG_EPOCH_OFFSET_US),
                data: body,
            })
        }
        b'k' => {
            if body.len() < 17 {
                return Err(bad("short keepalive"));
            }
            let wal_end = body.get_u64();
            let t = body.get_i64();
            let reply = body.get_u8();
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                server_time_us: t.saturating_add(PG_EPOCH_OFFSET_US),
                reply_requested: reply != 0,
            })
        }
        other => Err(bad(&format!("unknown kind `{}`", other as char))),
    }
}

/// Encodes a standby status update ('r').
pub fn encode_status_update(
    write: u64,
    flush: u64,
    apply: u64,
    now_unix_us: i64,
    reply: bool,
) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(write);
    b.put_u64(flush);
    b.put_u64(apply);
    b.put_i64(now_unix_us - PG_EPOCH_OFFSET_US);
    b.put_u8(u8::from(reply));
    b.to_vec()
}

/// What to stream and from where.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Slot name.
    pub slot: String,
    /// Publication names.
    pub publications: Vec<String>,
    /// Resume position (PostgreSQL uses the larger of this and the slot's confirmed_flush_lsn).
    pub start_lsn: u64,
    /// Ask pgoutput for logical decoding messages (`pg_logical_emit_message`).
    pub messages: bool,
}

/// An open replication stream. Owns its walsender connection.
pub struct ReplicationStream {
    conn: PgConnection,
}

impl ReplicationStream {
    /// Issues `START_REPLICATION SLOT … LOGICAL` with pgoutput protocol version 1.
    pub async fn start(mut conn: PgConnection, opts: &StartOptions) -> Result<Self, PgError> {
        let pubs = opts
            .publications
            .iter()
            .map(|p| crate::wire::quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {}{})",
            crate::wire::quote_ident(&opts.slot),
            spillway_pgoutput::message::format_pg_lsn(opts.start_lsn),
            crate::wire::quote_literal(&pubs),
            if opts.messages {
                ", messages 'true'"
            } else {
                ""
            }
        );
        conn.start_copy_both(&sql).await?;
        Ok(ReplicationStream { conn })
    }

    /// Waits for the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<ReplicationMessage, PgError> {
        loop {
            let msg = self.conn.recv().await?;
            match msg.tag {
                b'd' => return decode_copy_data(msg.body),
                // CopyDone, CommandComplete, ReadyForQuery: the walsender is shutting
                // down (a server restart) — reconnecting is the answer.
                b'c' | b'C' | b'Z' => {
                    return Err(PgError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server ended the replication stream",
                    )))
                }
                b'E' => return Err(PgError::Server(crate::wire::parse_error(&msg.body))),
                b'N' | b'S' => {}
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` in the replication stream",
                        other as char
                    )))
                }
            }
        }
    }

    /// Tells the server how far WAL is written and durably flushed on our side.
    pub async fn send_status(
        &mut self,
        write: u64,
        flush: u64,
        reply: bool,
    ) -> Result<(), PgError> {
        let now = spillway_core::time::now_us();
        let payload = encode_status_update(write, flush, flush, now, reply);
        self.conn.queue_copy_data(&payload);
        self.conn.send().await
    }

    /// Ends the stream politely (CopyDone, Terminate).
    pub async fn close(mut self) {
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::copy_done(&mut b);
        self.conn.queue_raw(&b);
        let _ = self.conn.send().await;
        self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_and_keepalive() {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(0x10);
        b.put_u64(0x20);
        b.put_i64(5);
        b.put_slice(b"Bxyz");
        match decode_copy_data(b.freeze()).unwrap() {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time_us,
                data,
            } => {
                assert_eq!((wal_start, wal_end), (0x10, 0x20));
                assert_eq!(server_time_us, 5 + PG_EPOCH_OFFSET_US);
                assert_eq!(&data[..], b"Bxyz");
            }
            other => panic!("{other:?}"),
        }
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(7);
        k.put_i64(0);
        k.put_u8(1);
        assert_eq!(
            decode_copy_data(k.freeze()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: 7,
                server_time_us: PG_EPOCH_OFFSET_US,
                reply_requested: true
            }
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [&b""[..], b"w", b"wabc", b"k12345", b"x"] {
            assert!(decode_copy_data(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn status_update_layout() {
        let b = encode_status_update(1, 2, 3, PG_EPOCH_OFFSET_US + 9, true);
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(&b[25..33], &9i64.to_be_bytes());
        assert_eq!(b[33], 1);
    }
}
