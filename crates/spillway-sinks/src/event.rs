//! The head of a native event: the fields the runtime filters on, parsed
//! once per record (the rest of the payload is skipped). Encoding itself is
//! [`spillway_core::encoding::Encoder`].

use serde::Deserialize;

/// What the filters need from a native event.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EventHead {
    /// `change`, `schema_change`, `message`, `requery_required`, …
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `schema.table` (change and schema_change events).
    #[serde(default)]
    pub(crate) entity: Option<String>,
    /// Table name.
    #[serde(default)]
    pub(crate) table: Option<String>,
    /// `insert`, `update`, `delete`, `truncate`, `read` (change events).
    #[serde(default)]
    pub(crate) operation: Option<String>,
    /// The transaction (change events).
    #[serde(default)]
    pub(crate) tx: Option<TxHead>,
}

/// The transaction of an event.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TxHead {
    /// Commit lsn text: the same for every event of one transaction.
    #[serde(default)]
    pub(crate) commit_lsn: Option<String>,
}

impl EventHead {
    /// Parses the head of a native JSON event.
    pub(crate) fn parse(payload: &[u8]) -> Result<EventHead, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}
