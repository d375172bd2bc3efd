//! Catalog work on an ordinary (non-replication) session: the preflight check, slot and
//! publication management, and look-ups the decoder needs (user types, primary keys).

use crate::wire::{quote_ident, quote_literal, PgConnection};
use crate::PgError;

/// How bad a preflight finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fine.
    Ok,
    /// Works, with a caveat the operator should know.
    Warning,
    /// Spillway cannot run until this is fixed.
    Error,
}

/// One line of `spillway check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// What was checked and what was found.
    pub what: String,
    /// How to fix it (empty when nothing needs fixing).
    pub fix: String,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Ok,
            what: what.into(),
            fix: String::new(),
        }
    }
    fn warn(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            what: what.into(),
            fix: fix.into(),
        }
    }
    fn error(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

/// Slots retaining more WAL than this are reported.
pub const RETAINED_WAL_WARN_BYTES: i64 = 1 << 30;

async fn scalar(conn: &mut PgConnection, sql: &str) -> Result<Option<String>, PgError> {
    Ok(conn
        .simple_query(sql)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// The `wal_level` check on its own: `spillway run` refuses to start without `logical`.
pub async fn check_wal_level(conn: &mut PgConnection) -> Result<Option<Finding>, PgError> {
    let level = scalar(conn, "SHOW wal_level").await?.unwrap_or_default();
    if level == "logical" {
        Ok(None)
    } else {
        Ok(Some(Finding::error(
            format!("wal_level is `{level}`, logical replication needs `logical`"),
            "run ALTER SYSTEM SET wal_level = logical; then restart postgresql (or set wal_level = logical in postgresql.conf)",
        )))
    }
}

/// Which tables the operator wants, for the per-table checks.
#[derive(Debug, Clone, Default)]
pub struct CheckScope {
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// `schema.table` patterns with `*` wildcards; empty = every table.
    pub tables: Vec<String>,
}

/// Runs every preflight check (SPEC §2) and returns the findings, worst first.
pub async fn preflight(
    conn: &mut PgConnection,
    scope: &CheckScope,
) -> Result<Vec<Finding>, PgError> {
    let mut out = Vec::new();
    match conn.server_major_version() {
        Some(v) if v < 14 => out.push(Finding::error(
            format!("postgresql {v} is too old"),
            "spillway needs postgresql 14 or newer",
        )),
        Some(v) => out.push(Finding::ok(format!("postgresql {v}"))),
        None => {}
    }
    match check_wal_level(conn).await? {
        Some(f) => out.push(f),
        None => out.push(Finding::ok("wal_level = logical")),
    }

    let slot_exists = scalar(
        conn,
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(&scope.slot)
        ),
    )
    .await?
    .as_deref()
        == Some("1");
    let max_slots: i64 = scalar(conn, "SHOW max_replication_slots")
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let used_slots: i64 = scalar(conn, "SELECT count(*) FROM pg_replication_slots")
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !slot_exists && used_slots >= max_slots {
        out.push(Finding::error(
            format!("max_replication_slots is {max_slots} and {used_slots} are in use, so slot `{}` cannot be created", scope.slot),
            format!("raise it: ALTER SYSTEM SET max_replication_slots = {}; then restart postgresql", max_slots + 4),
        ));
    } else {
        out.push(Finding::ok(format!(
            "replication slots: {used_slots} of {max_slots} in use{}",
            if slot_exists {
                format!(", `{}` exists and will be reused", scope.slot)
            } else {
                String::new()
            }
        )));
    }
    let max_senders: i64 = scalar(conn, "SHOW max_wal_senders")
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let used_senders: i64 = scalar(conn, "SELECT count(*) FROM pg_stat_replication")
        .await?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if used_senders >= max_senders {
        out.push(Finding::error(
            format!("max_wal_senders is {max_senders} and {used_senders} are in use"),
            format!(
                "raise it: ALTER SYSTEM SET max_wal_senders = {}; then restart postgresql",
                max_senders + 4
            ),
        ));
    } else {
        out.push(Finding::ok(format!(
            "wal senders: {used_senders} of {max_senders} in use"
        )));
    }

    let priv_row = conn
        .simple_query("SELECT rolreplication, rolsuper, current_user FROM pg_roles WHERE rolname = current_user")
        .await?;
    if let Some(row) = priv_row.first() {
        let repl = row.first().cloned().flatten().as_deref() == Some("t");
        let sup = row.get(1).cloned().flatten().as_deref() == Some("t");
        let user = row.get(2).cloned().flatten().unwrap_or_default();
        if repl || sup {
            out.push(Finding::ok(format!("role `{user}` may replicate")));
        } else {
            out.push(Finding::error(
                format!("role `{user}` lacks the REPLICATION privilege"),
                format!("run ALTER ROLE {} REPLICATION;", quote_ident(&user)),
            ));
        }
    }

    let pub_exists = scalar(
        conn,
        &format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = {}",
            quote_literal(&scope.publication)
        ),
    )
    .await?
    .as_deref()
        == Some("1");
    let table_sql = if pub_exists {
        out.push(Finding::ok(format!(
            "publication `{}` exists and will be reused as it is",
            scope.publication
        )));
        format!(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication_tables p JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = {} ORDER BY 2, 3",
            quote_literal(&scope.publication)
        )
    } else {
        out.push(Finding::ok(format!(
            "publication `{}` will be created on start",
            scope.publication
        )));
        "SELECT c.oid, n.nspname, c.relname, c.relreplident, \
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 2, 3"
            .to_string()
    };
    let tables = conn.simple_query(&table_sql).await?;
    let mut matched = 0;
    for row in tables {
        let schema = row.get(1).cloned().flatten().unwrap_or_default();
        let table = row.get(2).cloned().flatten().unwrap_or_default();
        if !crate::table_matches(&scope.tables, &schema, &table) {
            continue;
        }
        matched += 1;
        let ident = row.get(3).cloned().flatten().unwrap_or_default();
        let has_pk = row.get(4).cloned().flatten().as_deref() == Some("t");
        let name = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        match (ident.as_str(), has_pk) {
            ("f", _) => out.push(Finding::ok(format!("{schema}.{table}: replica identity full (old rows complete)"))),
            ("n", _) => out.push(Finding::error(
                format!("{schema}.{table}: replica identity nothing, so updates and deletes fail on the primary"),
                format!("run ALTER TABLE {name} REPLICA IDENTITY FULL;"),
            )),
            ("d", false) => out.push(Finding::warn(
                format!("{schema}.{table}: no primary key, so updates and deletes carry no key and old values"),
                format!("add a primary key, or run ALTER TABLE {name} REPLICA IDENTITY FULL;"),
            )),
            _ => out.push(Finding::warn(
                format!("{schema}.{table}: replica identity default gives old values of key columns only"),
                format!("for complete old rows run ALTER TABLE {name} REPLICA IDENTITY FULL;"),
            )),
        }
    }
    if matched == 0 {
        out.push(Finding::warn(
            "no table matches the configured tables yet".to_string(),
            "create the tables, or fix [source] tables".to_string(),
        ));
    }

    let retained = conn
        .simple_query(
            "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_replication_slots WHERE restart_lsn IS NOT NULL",
        )
        .await?;
    for row in retained {
        let slot = row.first().cloned().flatten().unwrap_or_default();
        let bytes: i64 = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        if bytes > RETAINED_WAL_WARN_BYTES {
            out.push(Finding::warn(
                format!("slot `{slot}` retains {} MiB of WAL", bytes >> 20),
                format!(
                    "start its consumer, or drop it: SELECT pg_drop_replication_slot({});",
                    quote_literal(&slot)
                ),
            ));
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(out)
}

/// Creates the publication when missing; an existing one is reused untouched (the user's
/// row filters and column lists are honoured).
///
/// Exact table names give `FOR TABLE …`; wildcards or no filter give `FOR ALL TABLES`
/// (Spillway then filters itself).
pub async fn ensure_publication(
    conn: &mut PgConnection,
    name: &str,
    tables: &[String],
) -> Result<bool, PgError> {
    let exists = scalar(
        conn,
        &format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = {}",
            quote_literal(name)
        ),
    )
    .await?
    .as_deref()
        == Some("1");
    if exists {
        return Ok(false);
    }
    let explicit = !tables.is_empty() && tables.iter().all(|t| !t.contains('*'));
    let target = if explicit {
        let list = tables
            .iter()
            .map(|t| match t.split_once('.') {
                Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
                None => quote_ident(t),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("FOR TABLE {list}")
    } else {
        "FOR ALL TABLES".to_string()
    };
    conn.simple_query(&format!(
        "CREATE PUBLICATION {} {target}",
        quote_ident(name)
    ))
    .await?;
    Ok(true)
}

/// Creates the logical slot (plugin pgoutput) when missing. Errors when a slot of that
/// name exists for another plugin or database.
pub async fn ensure_slot(conn: &mut PgConnection, name: &str) -> Result<bool, PgError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT plugin, database, current_database() FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(name)
        ))
        .await?;
    if let Some(row) = rows.first() {
        let plugin = row.first().cloned().flatten().unwrap_or_default();
        let db = row.get(1).cloned().flatten().unwrap_or_default();
        let current = row.get(2).cloned().flatten().unwrap_or_default();
        if plugin != "pgoutput" {
            return Err(PgError::Dsn(format!(
                "slot `{name}` exists but uses plugin `{plugin}`; drop it or set [source] slot to another name"
            )));
        }
        if db != current {
            return Err(PgError::Dsn(format!(
                "slot `{name}` belongs to database `{db}`, not `{current}`; set [source] slot to another name"
            )));
        }
        return Ok(false);
    }
    conn.simple_query(&format!(
        "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
        quote_literal(name)
    ))
    .await?;
    Ok(true)
}

/// The slot's `confirmed_flush_lsn` (what PostgreSQL believes Spillway holds durably).
pub async fn confirmed_flush_lsn(
    conn: &mut PgConnection,
    slot: &str,
) -> Result<Option<u64>, PgError> {
    let v = scalar(
        conn,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ),
    )
    .await?;
    Ok(v.as_deref()
        .and_then(spillway_pgoutput::message::parse_pg_lsn))
}

/// A row of `pg_type` as the decoder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTypeRow {
    /// Type OID.
    pub oid: u32,
    /// `typname`.
    pub name: String,
    /// `typtype`: b base, c composite, d domain, e enum, p pseudo, r range, m multirange.
    pub typtype: char,
    /// `typbasetype` (domains).
    pub base: u32,
    /// `typelem` (arrays).
    pub elem: u32,
    /// `typcategory` ('A' for arrays).
    pub category: char,
}

/// Looks up types by OID.
pub async fn lookup_types(
    conn: &mut PgConnection,
    oids: &[u32],
) -> Result<Vec<PgTypeRow>, PgError> {
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    let list = oids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let rows = conn
        .simple_query(&format!(
            "SELECT oid, typname, typtype, typbasetype, typelem, typcategory FROM pg_type WHERE oid IN ({list})"
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            Some(PgTypeRow {
                oid: get(0).parse().ok()?,
                name: get(1),
                typtype: get(2).chars().next().unwrap_or('b'),
                base: get(3).parse().unwrap_or(0),
                elem: get(4).parse().unwrap_or(0),
                category: get(5).chars().next().unwrap_or('U'),
            })
        })
        .collect())
}

/// The primary-key column names of a table (by OID), in key order; empty without a key.
pub async fn primary_key(conn: &mut PgConnection, rel_oid: u32) -> Result<Vec<String>, PgError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT a.attname FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) \
             WHERE i.indrelid = {rel_oid} AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)"
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// WAL bytes slot `slot` holds back on the server; `None` when the slot is gone.
pub async fn retained_wal_bytes(
    conn: &mut PgConnection,
    slot: &str,
) -> Result<Option<u64>, PgError> {
    let v = scalar(
        conn,
        &format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ),
    )
    .await?;
    Ok(v.and_then(|b| b.parse::<i64>().ok())
        .map(|b| b.max(0) as u64))
}
