//! The query of `GET /v1/changes`, written once: the server parses it
//! ([`ChangesQuery::parse`]), the Rust client and `spillway tail` build it and write it
//! ([`ChangesQuery::to_query_string`]). A new stream parameter is added here, and all
//! three follow.
//!
//! Parameters ([`PARAMS`]): one start (`from_lsn`, `from_timestamp`, `from` = `beginning`
//! | `now`, `consumer`; default `now`), `epoch` (with `from_lsn` only: the log epoch the
//! position belongs to), `entities` / `exclude_entities` (comma lists of table patterns),
//! `operations` (comma list), `batch_size` (1..=10000), `batch_timeout_ms` (0..=60000),
//! `heartbeat_ms` (100..=300000). Every error is one line naming the parameter and the fix.

use std::fmt;
use std::fmt::Write as _;

use crate::pattern::TablePattern;
use crate::transform::Filter;
use crate::Operation;

/// Every parameter `/v1/changes` takes.
pub const PARAMS: &[&str] = &[
    "from_lsn",
    "from_timestamp",
    "from",
    "consumer",
    "entities",
    "exclude_entities",
    "operations",
    "batch_size",
    "batch_timeout_ms",
    "heartbeat_ms",
    "epoch",
];

/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Default `batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Default `heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 10_000;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// Only records committed from now on (`from=now`, the default).
    #[default]
    Now,
    /// The oldest retained record (`from=beginning`).
    Beginning,
    /// At this lsn, inclusive (`from_lsn`).
    Lsn(u64),
    /// At the first event committed at or after this time, µs since the epoch
    /// (`from_timestamp`: µs or RFC 3339).
    Timestamp(i64),
    /// Right after this named consumer's checkpoint (`consumer`; the beginning for a new
    /// one).
    Consumer(String),
}

/// A `/v1/changes` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangesQuery {
    /// Where to start.
    pub start: Start,
    /// The log epoch a [`Start::Lsn`] belongs to (`Spillway-Log-Epoch`).
    pub epoch: Option<u64>,
    /// Only these tables (empty: all).
    pub entities: Vec<TablePattern>,
    /// Not these tables.
    pub exclude_entities: Vec<TablePattern>,
    /// Only row changes of these operations (`None`: all).
    pub operations: Option<Vec<Operation>>,
    /// Events per batch (`None`: [`DEFAULT_BATCH_SIZE`]).
    pub batch_size: Option<usize>,
    /// Longest wait after a batch's first event before it is sent (`None`: 0, as soon as
    /// nothing more is ready).
    pub batch_timeout_ms: Option<u64>,
    /// Idle time before a heartbeat line (`None`: [`DEFAULT_HEARTBEAT_MS`]).
    pub heartbeat_ms: Option<u64>,
}

/// A query that is not valid; the message names the parameter and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn err(message: impl Into<String>) -> QueryError {
    QueryError(message.into())
}

/// Checks a named consumer's name: 1-128 letters, digits, `_`, `-` or `.`.
///
/// # Errors
/// [`QueryError`] naming the rule.
pub fn valid_consumer_name(name: &str) -> Result<(), QueryError> {
    if !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Ok(())
    } else {
        Err(err(format!(
            "consumer name `{name}` is invalid; use 1-128 letters, digits, `_`, `-` or `.`"
        )))
    }
}

/// Parses a log epoch as the `Spillway-Log-Epoch` header writes it: 1 to 16 hex digits
/// (nothing else; no sign).
#[must_use]
pub fn parse_epoch(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// A log epoch as the `Spillway-Log-Epoch` header writes it (16 hex digits).
#[must_use]
pub fn format_epoch(epoch: u64) -> String {
    format!("{epoch:016x}")
}

fn number(key: &str, v: &str, min: u64, max: u64) -> Result<u64, QueryError> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(format!(
            "`{key}` must be a whole number from {min} to {max}, got `{v}`"
        ))),
    }
}

fn items(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn patterns(key: &str, v: &str) -> Result<Vec<TablePattern>, QueryError> {
    let list = items(v);
    if list.is_empty() {
        return Err(err(format!(
            "`{key}` is empty; give a comma list of schema.table"
        )));
    }
    list.into_iter()
        .map(|item| {
            TablePattern::parse(item).map_err(|_| {
                err(format!(
                    "`{key}`: `{item}` is not an entity; write schema.table, table or schema.*"
                ))
            })
        })
        .collect()
}

impl ChangesQuery {
    /// Parses the query's `(key, value)` pairs (already percent-decoded).
    ///
    /// # Errors
    /// [`QueryError`] for an unknown or repeated parameter, two starts, a value out of
    /// range, a bad pattern, operation, consumer name or epoch.
    pub fn parse<'a, I>(pairs: I) -> Result<ChangesQuery, QueryError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut seen: Vec<&str> = Vec::new();
        let mut q = ChangesQuery::default();
        let mut start: Option<(&str, Start)> = None;
        for (key, v) in pairs {
            let Some(key) = PARAMS.iter().copied().find(|p| *p == key) else {
                return Err(err(format!(
                    "unknown parameter `{key}`; /v1/changes takes {}",
                    PARAMS.join(", ")
                )));
            };
            if seen.contains(&key) {
                return Err(err(format!("`{key}` is given twice; give it once")));
            }
            seen.push(key);
            let this = match key {
                "from_lsn" => Some(Start::Lsn(number(key, v, 1, u64::MAX)?)),
                "from_timestamp" => {
                    let ts = v
                        .parse::<i64>()
                        .ok()
                        .filter(|t| *t >= 0)
                        .or_else(|| crate::time::parse_rfc3339_micros(v))
                        .ok_or_else(|| {
                            err(format!(
                                "`from_timestamp` must be µs since the epoch or RFC 3339 (2024-01-02T03:04:05Z), got `{v}`"
                            ))
                        })?;
                    Some(Start::Timestamp(ts))
                }
                "from" => Some(match v {
                    "beginning" => Start::Beginning,
                    "now" => Start::Now,
                    other => {
                        return Err(err(format!(
                            "`from` must be `beginning` or `now`, got `{other}`"
                        )))
                    }
                }),
                "consumer" => {
                    valid_consumer_name(v)?;
                    Some(Start::Consumer(v.to_owned()))
                }
                _ => None,
            };
            if let Some(this) = this {
                if let Some((first, _)) = &start {
                    return Err(err(format!(
                        "give only one of `from_lsn`, `from_timestamp`, `from`, `consumer` (got both `{first}` and `{key}`)"
                    )));
                }
                start = Some((key, this));
                continue;
            }
            match key {
                "epoch" => {
                    q.epoch = Some(parse_epoch(v).ok_or_else(|| {
                        err(format!(
                            "`epoch` must be the 16 hex digits of a Spillway-Log-Epoch header, got `{v}`"
                        ))
                    })?);
                }
                "entities" => q.entities = patterns(key, v)?,
                "exclude_entities" => q.exclude_entities = patterns(key, v)?,
                "operations" => {
                    let list = items(v);
                    if list.is_empty() {
                        return Err(err("`operations` is empty; give a comma list"));
                    }
                    q.operations = Some(
                        Operation::parse_list(&list, &Operation::ALL)
                            .map_err(|e| err(format!("`operations`: {e}")))?,
                    );
                }
                "batch_size" => {
                    q.batch_size = Some(number(key, v, 1, MAX_BATCH_SIZE as u64)? as usize);
                }
                "batch_timeout_ms" => q.batch_timeout_ms = Some(number(key, v, 0, 60_000)?),
                "heartbeat_ms" => q.heartbeat_ms = Some(number(key, v, 100, 300_000)?),
                _ => {}
            }
        }
        if let Some((_, s)) = start {
            q.start = s;
        }
        if q.epoch.is_some() && !matches!(q.start, Start::Lsn(_)) {
            return Err(err(
                "`epoch` says which log epoch a `from_lsn` belongs to; give it with `from_lsn` only",
            ));
        }
        Ok(q)
    }

    /// The query as `key=value&…` (percent-encoded), what [`ChangesQuery::parse`] reads
    /// back; parameters left at their defaults are not written, except the start.
    #[must_use]
    pub fn to_query_string(&self) -> String {
        let mut out = String::new();
        let mut pair = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            percent_encode(&mut out, value);
        };
        match &self.start {
            Start::Now => pair("from", "now"),
            Start::Beginning => pair("from", "beginning"),
            Start::Lsn(lsn) => pair("from_lsn", &lsn.to_string()),
            Start::Timestamp(us) => pair("from_timestamp", &us.to_string()),
            Start::Consumer(name) => pair("consumer", name),
        }
        if let Some(epoch) = self.epoch {
            pair("epoch", &format_epoch(epoch));
        }
        let join = |list: &[TablePattern]| {
            list.iter()
                .map(TablePattern::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.entities.is_empty() {
            pair("entities", &join(&self.entities));
        }
        if !self.exclude_entities.is_empty() {
            pair("exclude_entities", &join(&self.exclude_entities));
        }
        if let Some(ops) = &self.operations {
            let names: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
            pair("operations", &names.join(","));
        }
        if let Some(n) = self.batch_size {
            pair("batch_size", &n.to_string());
        }
        if let Some(ms) = self.batch_timeout_ms {
            pair("batch_timeout_ms", &ms.to_string());
        }
        if let Some(ms) = self.heartbeat_ms {
            pair("heartbeat_ms", &ms.to_string());
        }
        out
    }

    /// The stream's filter (`entities`, `exclude_entities`, `operations`).
    #[must_use]
    pub fn filter(&self) -> Filter {
        let mut f = Filter::all().with_exclude(self.exclude_entities.clone());
        if !self.entities.is_empty() {
            f = f.with_tables(
                self.entities
                    .iter()
                    .map(|p| (p.clone(), Vec::new()))
                    .collect(),
            );
        }
        if let Some(ops) = &self.operations {
            f = f.with_operations(ops.clone());
        }
        f
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters and the `*` and `,`
/// of patterns and lists.
fn percent_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*' | b',') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ChangesQuery, String> {
        ChangesQuery::parse(pairs.iter().copied()).map_err(|e| e.0)
    }

    /// Percent-decoding as a server's query parser does it (enough for the round trip).
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn written_queries_parse_back_the_same() {
        let q = ChangesQuery {
            start: Start::Consumer("orders-indexer".into()),
            entities: TablePattern::parse_list(&["public.*", "users"]).unwrap(),
            exclude_entities: TablePattern::parse_list(&["audit_log"]).unwrap(),
            operations: Some(vec![Operation::Insert, Operation::Read]),
            batch_size: Some(500),
            batch_timeout_ms: Some(0),
            heartbeat_ms: Some(1000),
            ..ChangesQuery::default()
        };
        let text = q.to_query_string();
        let pairs: Vec<(String, String)> = text
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), decode(v))
            })
            .collect();
        let back = ChangesQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, Ok(q));
        let lsn = ChangesQuery {
            start: Start::Lsn(42),
            epoch: Some(0xab),
            ..ChangesQuery::default()
        };
        assert_eq!(lsn.to_query_string(), "from_lsn=42&epoch=00000000000000ab");
        let odd = ChangesQuery {
            entities: TablePattern::parse_list(&["my schema.t&x"]).unwrap(),
            ..ChangesQuery::default()
        };
        assert_eq!(odd.to_query_string(), "from=now&entities=my%20schema.t%26x");
    }

    #[test]
    fn bad_queries_are_named() {
        for (pairs, needle) in [
            (vec![("bogus", "1")], "unknown parameter `bogus`"),
            (
                vec![("from_lsn", "0")],
                "`from_lsn` must be a whole number from 1",
            ),
            (vec![("from_lsn", "1"), ("from", "now")], "only one of"),
            (vec![("from_lsn", "1"), ("from_lsn", "2")], "given twice"),
            (vec![("from", "yesterday")], "`from` must be"),
            (vec![("from_timestamp", "soon")], "RFC 3339"),
            (vec![("consumer", "a b")], "consumer name"),
            (vec![("entities", "a.b.c")], "not an entity"),
            (vec![("entities", ",")], "is empty"),
            (vec![("operations", "upsert")], "unknown operation `upsert`"),
            (vec![("batch_size", "10001")], "`batch_size`"),
            (vec![("heartbeat_ms", "5")], "`heartbeat_ms`"),
            (vec![("epoch", "ab")], "from_lsn"),
            (vec![("from_lsn", "1"), ("epoch", "+ab")], "16 hex digits"),
            (
                vec![("from_lsn", "1"), ("epoch", "00000000000000000ab")],
                "16 hex digits",
            ),
        ] {
            let e = parse(&pairs).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
        assert_eq!(
            parse(&[("from_timestamp", "2024-01-02T03:04:05Z")])
                .unwrap()
                .start,
            Start::Timestamp(1_704_164_645_000_000)
        );
    }

    #[test]
    fn the_filter_follows_the_query() {
        let q = parse(&[
            ("entities", "bank.*,users"),
            ("exclude_entities", "bank.secret"),
            ("operations", "insert"),
        ])
        .unwrap();
        let f = q.filter();
        assert!(f.accepts_row("bank", "holding", Operation::Insert));
        assert!(!f.accepts_row("bank", "holding", Operation::Delete));
        assert!(!f.accepts_row("bank", "secret", Operation::Insert));
        assert!(f.accepts_row("commerce", "users", Operation::Insert));
        assert!(!f.accepts_row("commerce", "products", Operation::Insert));
        assert!(ChangesQuery::default().filter().is_all());
    }
}
