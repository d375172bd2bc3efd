//! The control events, one shape each, whoever writes them: capture (a gap record in the
//! log), the HTTP stream and the sink runtime (a position that cannot be served), the
//! stream's keep-alive.

use serde::{Deserialize, Serialize};

/// Why events are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeryReason {
    /// Retention deleted `requested_lsn..oldest_lsn` before it was read.
    Trimmed,
    /// The position is past the log's end: the reader saw lsns this log does not hold
    /// (a repaired or restored log directory).
    AheadOfLog,
    /// A named consumer's checkpoint was reset because the log ended before it, or a
    /// position of an earlier epoch was moved back to a later epoch's first lsn.
    LogRewound,
    /// The log itself lacks transactions the replication slot was confirmed for (the
    /// record is stored in the log).
    LogGap,
    /// The position names a log epoch this log never had.
    UnknownLogEpoch,
    /// A reason this version does not know (from a newer server).
    #[serde(other)]
    Other,
}

impl RequeryReason {
    /// The `reason` field's value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RequeryReason::Trimmed => "trimmed",
            RequeryReason::AheadOfLog => "ahead_of_log",
            RequeryReason::LogRewound => "log_rewound",
            RequeryReason::LogGap => "log_gap",
            RequeryReason::UnknownLogEpoch => "unknown_log_epoch",
            RequeryReason::Other => "other",
        }
    }
}

/// `requery_required`: the events before `oldest_lsn` (from `requested_lsn` on) cannot be
/// delivered; the consumer must re-read its tables from the source, then go on with the
/// events that follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeryRequired {
    /// The record's lsn, when the log itself holds it (`log_gap`); absent for one a
    /// reader writes into a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
    /// Stable id: `gap:<slot position X/Y>` for a record in the log,
    /// `requery:<requested>:<oldest>` otherwise (empty from servers before it was added).
    #[serde(default)]
    pub id: String,
    /// When it was written, µs since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// What the consumer asked for (for `log_gap`: the record's own lsn).
    pub requested_lsn: u64,
    /// The first lsn the stream goes on with.
    pub oldest_lsn: u64,
    /// Why (absent from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RequeryReason>,
    /// For a `log_gap` record: the log epoch that begins with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_epoch: Option<String>,
    /// For a `log_gap` record: the PostgreSQL position the log had reached (`X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_end_pg_lsn: Option<String>,
    /// For a `log_gap` record: the position the slot was confirmed to (`X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_confirmed_pg_lsn: Option<String>,
}

impl RequeryRequired {
    /// One a reader writes into its stream: the log cannot serve `requested..oldest`.
    #[must_use]
    pub fn new(requested_lsn: u64, oldest_lsn: u64, reason: RequeryReason, timestamp: i64) -> Self {
        RequeryRequired {
            lsn: None,
            id: format!("requery:{requested_lsn}:{oldest_lsn}"),
            timestamp,
            requested_lsn,
            oldest_lsn,
            reason: Some(reason),
            log_epoch: None,
            log_end_pg_lsn: None,
            slot_confirmed_pg_lsn: None,
        }
    }

    /// The gap record capture stores in the log at `lsn`, beginning epoch `log_epoch`.
    #[must_use]
    pub fn log_gap(
        lsn: u64,
        oldest_lsn: u64,
        log_epoch: String,
        log_end_pg_lsn: String,
        slot_confirmed_pg_lsn: String,
        timestamp: i64,
    ) -> Self {
        RequeryRequired {
            lsn: Some(lsn),
            id: format!("gap:{slot_confirmed_pg_lsn}"),
            timestamp,
            requested_lsn: lsn,
            oldest_lsn,
            reason: Some(RequeryReason::LogGap),
            log_epoch: Some(log_epoch),
            log_end_pg_lsn: Some(log_end_pg_lsn),
            slot_confirmed_pg_lsn: Some(slot_confirmed_pg_lsn),
        }
    }

    /// The event as one compact JSON object, `type` first.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        tagged(&Tagged::RequeryRequired(self))
    }
}

/// `heartbeat`: the stream is alive. Never stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The log's last committed lsn.
    pub current_lsn: u64,
    /// How far this stream has read the log: every lsn up to here was either delivered
    /// or left out by the stream's filter (absent from older servers). A filtered
    /// consumer is caught up when it reaches `current_lsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_lsn: Option<u64>,
    /// When it was sent, µs since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
}

impl Heartbeat {
    /// The event as one compact JSON object, `type` first.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        tagged(&Tagged::Heartbeat(self))
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged<'a> {
    RequeryRequired(&'a RequeryRequired),
    Heartbeat(&'a Heartbeat),
}

fn tagged(t: &Tagged<'_>) -> Vec<u8> {
    // Plain structs of numbers and strings: serializing cannot fail.
    serde_json::to_vec(t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_for_every_writer() {
        let r = RequeryRequired::new(5, 100, RequeryReason::Trimmed, 7);
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"type":"requery_required","id":"requery:5:100","timestamp":7,"requested_lsn":5,"oldest_lsn":100,"reason":"trimmed"}"#
        );
        let g = RequeryRequired::log_gap(
            9,
            1,
            "00000000000000ab".into(),
            "0/10".into(),
            "0/20".into(),
            8,
        );
        assert_eq!(
            String::from_utf8(g.to_json()).unwrap(),
            r#"{"type":"requery_required","lsn":9,"id":"gap:0/20","timestamp":8,"requested_lsn":9,"oldest_lsn":1,"reason":"log_gap","log_epoch":"00000000000000ab","log_end_pg_lsn":"0/10","slot_confirmed_pg_lsn":"0/20"}"#
        );
        let h = Heartbeat {
            current_lsn: 3,
            scanned_lsn: Some(2),
            timestamp: 1,
        };
        assert_eq!(
            String::from_utf8(h.to_json()).unwrap(),
            r#"{"type":"heartbeat","current_lsn":3,"scanned_lsn":2,"timestamp":1}"#
        );
    }

    #[test]
    fn unknown_reasons_parse() {
        let r: RequeryRequired =
            serde_json::from_str(r#"{"requested_lsn":1,"oldest_lsn":2,"reason":"future"}"#)
                .unwrap();
        assert_eq!(r.reason, Some(RequeryReason::Other));
        for reason in [
            RequeryReason::Trimmed,
            RequeryReason::AheadOfLog,
            RequeryReason::LogRewound,
            RequeryReason::LogGap,
            RequeryReason::UnknownLogEpoch,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
