//! Per-consumer shaping of the event stream: what a sink (and an API stream) applies to
//! each event before it is encoded.
//!
//! The chain is **filter → transforms → encode**: the sink runtime parses each stored
//! event once into an [`EventView`], asks its transforms in order, and hands what they
//! keep to the encoder. [`Filter`] (`tables`, `operations`, `exclude_entities`) is the
//! first [`Transform`]; the row-shaping ones of SPEC §7 (pivot, `where`, masks) take the
//! same place in the chain.
//!
//! Control events are never filtered away: a `requery_required` reaches every consumer
//! (it says that events are missing), and so does anything a filter cannot classify —
//! hiding what it does not understand would be a silent gap.

use crate::event::{EventKind, EventView};
use crate::pattern::TablePattern;
use crate::Operation;

/// What a transform decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Deliver the event (as far as this transform is concerned).
    Keep,
    /// Leave it out of this consumer's stream.
    Drop,
}

/// One step of a consumer's chain.
pub trait Transform: Send {
    /// The name in configuration and error messages.
    fn name(&self) -> &'static str;

    /// Decides what happens to `event`.
    fn apply(&mut self, event: &EventView<'_>) -> Verdict;
}

/// Which tables and operations a consumer wants (reference 001's
/// `{"trades": ["insert","update"]}`, the API's `entities` / `exclude_entities` /
/// `operations`, and `[source] tables`).
///
/// - `tables`: each pattern with the operations kept for matching tables (an empty list:
///   all); when given, events of other tables and logical messages (which name no table)
///   are left out.
/// - `exclude`: tables left out whatever `tables` says.
/// - `operations`: the row-change operations kept for every table.
///
/// A `schema_change` passes when its table passes (whatever the operations); a
/// `requery_required`, a heartbeat and an event of an unknown type always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    tables: Option<Vec<(TablePattern, Vec<Operation>)>>,
    exclude: Vec<TablePattern>,
    operations: Option<Vec<Operation>>,
}

impl Filter {
    /// A filter that keeps everything.
    #[must_use]
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Keeps only the tables matching one of `tables`, each with its operations (empty:
    /// every operation).
    #[must_use]
    pub fn with_tables(mut self, tables: Vec<(TablePattern, Vec<Operation>)>) -> Filter {
        self.tables = Some(tables);
        self
    }

    /// Leaves out the tables matching any of `patterns`.
    #[must_use]
    pub fn with_exclude(mut self, patterns: Vec<TablePattern>) -> Filter {
        self.exclude = patterns;
        self
    }

    /// Keeps only row changes of these operations.
    #[must_use]
    pub fn with_operations(mut self, operations: Vec<Operation>) -> Filter {
        self.operations = Some(operations);
        self
    }

    /// Whether nothing is filtered.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.tables.is_none() && self.exclude.is_empty() && self.operations.is_none()
    }

    /// The table patterns of `tables` (empty when every table is kept).
    pub fn table_patterns(&self) -> impl Iterator<Item = &TablePattern> {
        self.tables.iter().flatten().map(|(p, _)| p)
    }

    /// Whether `schema.table` is kept at all (for `schema_change` events and for what
    /// capture publishes).
    #[must_use]
    pub fn accepts_table(&self, schema: &str, table: &str) -> bool {
        if self.exclude.iter().any(|p| p.matches(schema, table)) {
            return false;
        }
        match &self.tables {
            None => true,
            Some(tables) => tables.iter().any(|(p, _)| p.matches(schema, table)),
        }
    }

    /// Whether a row change `op` of `schema.table` is kept.
    #[must_use]
    pub fn accepts_row(&self, schema: &str, table: &str, op: Operation) -> bool {
        if self
            .operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&op))
        {
            return false;
        }
        if self.exclude.iter().any(|p| p.matches(schema, table)) {
            return false;
        }
        match &self.tables {
            None => true,
            Some(tables) => tables
                .iter()
                .any(|(p, ops)| p.matches(schema, table) && (ops.is_empty() || ops.contains(&op))),
        }
    }

    /// Whether `event` is kept (see the type's documentation).
    #[must_use]
    pub fn accepts(&self, event: &EventView<'_>) -> bool {
        if self.is_all() {
            return true;
        }
        match event.kind() {
            Ok(EventKind::Change) => match (event.schema_table(), event.operation_opt()) {
                (Some((schema, table)), Some(op)) => self.accepts_row(schema, table, op),
                // An operation this version does not know: only the tables decide.
                (Some((schema, table)), None) => self.accepts_table(schema, table),
                (None, _) => self.tables.is_none(),
            },
            Ok(EventKind::SchemaChange) => match event.schema_table() {
                Some((schema, table)) => self.accepts_table(schema, table),
                None => self.tables.is_none(),
            },
            Ok(EventKind::Message) => self.tables.is_none(),
            Ok(EventKind::RequeryRequired | EventKind::Heartbeat) | Err(_) => true,
        }
    }
}

impl Transform for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn apply(&mut self, event: &EventView<'_>) -> Verdict {
        if self.accepts(event) {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TablePattern {
        TablePattern::parse(s).unwrap()
    }

    fn change(table: &str, op: &str) -> Vec<u8> {
        format!(r#"{{"type":"change","lsn":1,"operation":"{op}","entity":"public.{table}","schema":"public","table":"{table}"}}"#).into_bytes()
    }

    fn keeps(f: &Filter, payload: &[u8]) -> bool {
        f.accepts(&EventView::parse(payload).unwrap())
    }

    #[test]
    fn reference_001_tables_with_operations() {
        let f = Filter::all().with_tables(vec![
            (p("trades"), vec![Operation::Insert, Operation::Update]),
            (p("public.users"), vec![]),
        ]);
        assert!(keeps(&f, &change("trades", "insert")));
        assert!(!keeps(&f, &change("trades", "delete")));
        assert!(keeps(&f, &change("users", "delete")));
        assert!(!keeps(&f, &change("orders", "insert")));
        let schema = br#"{"type":"schema_change","lsn":1,"entity":"public.trades","schema":"public","table":"trades"}"#;
        assert!(keeps(&f, schema));
        let message = br#"{"type":"message","lsn":1,"prefix":"p"}"#;
        assert!(!keeps(&f, message));
        assert!(keeps(
            &Filter::all().with_operations(vec![Operation::Insert]),
            message
        ));
    }

    #[test]
    fn exclusions_and_operations() {
        let f = Filter::all()
            .with_exclude(vec![p("audit_*")])
            .with_operations(vec![Operation::Insert, Operation::Read]);
        assert!(keeps(&f, &change("orders", "insert")));
        assert!(keeps(&f, &change("orders", "read")));
        assert!(!keeps(&f, &change("orders", "update")));
        assert!(!keeps(&f, &change("audit_log", "insert")));
        assert!(!f.accepts_table("public", "audit_log"));
    }

    #[test]
    fn control_events_always_pass() {
        let f = Filter::all().with_tables(vec![(p("nothing"), vec![])]);
        for payload in [
            &br#"{"type":"requery_required","lsn":9,"reason":"log_gap","requested_lsn":9,"oldest_lsn":1}"#[..],
            br#"{"type":"heartbeat","current_lsn":1}"#,
            br#"{"type":"from_the_future"}"#,
        ] {
            assert!(keeps(&f, payload), "{}", String::from_utf8_lossy(payload));
        }
        assert_eq!(
            Filter::all()
                .with_exclude(vec![p("x")])
                .clone()
                .apply(&EventView::parse(&change("x", "insert")).unwrap()),
            Verdict::Drop
        );
    }
}
