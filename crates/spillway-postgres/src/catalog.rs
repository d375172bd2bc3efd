//! Catalog work on an ordinary (non-replication) session: the preflight check, slot and
//! publication management, and look-ups the decoder needs (user types, primary keys).

use crate::wire::{quote_ident, quote_literal, PgConnection};
use crate::PgError;
use std::collections::{BTreeSet, HashMap};

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

    let plan = plan_publication(conn, &scope.publication, &scope.tables).await?;
    let name = &scope.publication;
    match (&plan.problem, plan.exists, plan.owned) {
        (Some(problem), _, _) => out.push(problem.clone()),
        (None, false, _) => out.push(Finding::ok(format!(
            "publication `{name}` does not exist; on start spillway will {}",
            plan.changes.join("; ")
        ))),
        (None, true, true) if plan.changes.is_empty() => out.push(Finding::ok(format!(
            "publication `{name}` is managed by spillway and matches [source] tables"
        ))),
        (None, true, true) => out.push(Finding::ok(format!(
            "publication `{name}` is managed by spillway; on start spillway will {}",
            plan.changes.join("; ")
        ))),
        (None, true, false) => out.push(Finding::ok(format!(
            "publication `{name}` exists (not managed by spillway) and will be used as it is"
        ))),
    }
    // The per-table checks cover the configured tables; a user's publication with no
    // [source] tables decides on its own which tables those are.
    let table_sql = if plan.exists && !plan.owned && scope.tables.is_empty() {
        format!(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication_tables p JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = {} ORDER BY 2, 3",
            quote_literal(&scope.publication)
        )
    } else {
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
        if !spillway_core::pattern::table_matches(&scope.tables, &schema, &table) {
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

/// The comment Spillway puts on a publication it creates:
/// `COMMENT ON PUBLICATION … IS 'managed by spillway'`.
///
/// A publication carrying exactly this comment is Spillway's own, and every start brings
/// it in line with `[source] tables`. Any other publication is the user's: it is never
/// changed (its row filters and column lists are honoured), and a start refuses when it
/// does not publish a configured table. Setting the comment hands a publication over to
/// Spillway (e.g. one an earlier version created, which carries no mark); removing it
/// (`COMMENT ON PUBLICATION … IS NULL`) takes it back.
pub const MANAGED_MARK: &str = "managed by spillway";

/// A plain or partitioned table of the database, as the publication checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTable {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Schema name, as stored (unquoted).
    pub schema: String,
    /// Table name, as stored (unquoted).
    pub name: String,
    /// A partitioned table: it holds no rows itself, its partitions do.
    pub partitioned: bool,
    /// The partitioned table this one is a partition of.
    pub parent: Option<u32>,
}

impl DbTable {
    fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// An existing publication, as far as deciding what it sends goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubState {
    /// It carries [`MANAGED_MARK`].
    pub owned: bool,
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// Tables listed in it (`pg_publication_rel`).
    pub members: BTreeSet<u32>,
    /// Schemas published whole (`FOR TABLES IN SCHEMA`, PostgreSQL 15+).
    pub schemas: BTreeSet<String>,
}

/// What [`ensure_publication`] does (or would do) to the publication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicationPlan {
    /// The publication exists already.
    pub exists: bool,
    /// It is Spillway's (carries [`MANAGED_MARK`], or is about to be created).
    pub owned: bool,
    /// SQL that brings it in line, run as one transaction (empty: nothing to do).
    pub statements: Vec<String>,
    /// What those statements do, one line each, for the log and `spillway check`.
    pub changes: Vec<String>,
    /// Why Spillway must not start with this publication, with the fix. When set, nothing
    /// is changed.
    pub problem: Option<Finding>,
}

/// Decides what the publication needs so that every configured table's changes reach
/// Spillway under a name `[source] tables` lets through (pure; see [`ensure_publication`]).
///
/// The configured tables are the existing plain and partitioned tables that `patterns`
/// match ([`spillway_core::pattern::table_matches`]; no patterns = every table). An entry without `*` that
/// matches no table is an error: it is a typo or the wrong database, and a table created
/// later would not be in a `FOR TABLE` publication.
pub fn plan_publication_for(
    name: &str,
    patterns: &[String],
    tables: &[DbTable],
    existing: Option<&PubState>,
) -> PublicationPlan {
    let mut plan = PublicationPlan {
        exists: existing.is_some(),
        owned: existing.is_none_or(|p| p.owned),
        ..Default::default()
    };
    let absent: Vec<&String> = patterns
        .iter()
        .filter(|p| !p.contains('*'))
        .filter(|p| {
            !tables.iter().any(|t| {
                spillway_core::pattern::table_matches(std::slice::from_ref(p), &t.schema, &t.name)
            })
        })
        .collect();
    if !absent.is_empty() {
        plan.problem = Some(absent_finding(&absent, tables));
        return plan;
    }
    let q = quote_ident(name);
    if let Some(state) = existing.filter(|s| !s.owned) {
        if !patterns.is_empty() {
            plan.problem = user_publication_problem(name, patterns, tables, state);
        }
        return plan;
    }

    // Spillway's own (or about to be created): make it match the config.
    let explicit = !patterns.is_empty() && patterns.iter().all(|p| !p.contains('*'));
    let members: BTreeSet<u32> = if explicit {
        tables
            .iter()
            .filter(|t| spillway_core::pattern::table_matches(patterns, &t.schema, &t.name))
            .map(|t| t.oid)
            .collect()
    } else {
        BTreeSet::new()
    };
    let desired = |via_root: bool| PubState {
        owned: true,
        all_tables: !explicit,
        via_root,
        members: members.clone(),
        schemas: BTreeSet::new(),
    };
    // Keep the current partition setting when it works (changing it renames the tables
    // partition rows arrive as); a new publication publishes via the partition root.
    let first = existing.is_none_or(|s| s.via_root);
    let Some(via_root) = [first, !first]
        .into_iter()
        .find(|v| deliveries(patterns, tables, &desired(*v)).is_clean())
    else {
        let d = deliveries(patterns, tables, &desired(true));
        plan.problem = Some(Finding::error(
            format!(
                "[source] tables names partitioned tables and partitions so that no publish_via_partition_root setting of publication `{name}` delivers them all: {}",
                d.misnamed_text()
            ),
            format!("add {} to [source] tables", d.arrival_names()),
        ));
        return plan;
    };
    let by_oid: HashMap<u32, &DbTable> = tables.iter().map(|t| (t.oid, t)).collect();
    let names = |oids: &BTreeSet<u32>, f: fn(&DbTable) -> String| {
        oids.iter()
            .filter_map(|o| by_oid.get(o).map(|t| f(t)))
            .collect::<Vec<_>>()
    };
    let target = if explicit {
        format!("FOR TABLE {}", names(&members, DbTable::sql).join(", "))
    } else {
        "FOR ALL TABLES".to_string()
    };
    let shown = if explicit {
        format!(
            "FOR TABLE {}",
            name_list(&names(&members, DbTable::display))
        )
    } else {
        "FOR ALL TABLES".to_string()
    };
    let create = [
        format!("CREATE PUBLICATION {q} {target} WITH (publish_via_partition_root = {via_root})"),
        format!(
            "COMMENT ON PUBLICATION {q} IS {}",
            quote_literal(MANAGED_MARK)
        ),
    ];
    match existing {
        None => {
            plan.statements.extend(create);
            plan.changes.push(format!("create it {shown}"));
        }
        Some(state) if state.all_tables == explicit => {
            // FOR ALL TABLES cannot be altered into FOR TABLE or back. Dropping and
            // creating in one transaction leaves no point in the WAL where the name is
            // missing (decoding that point would fail with "publication does not exist").
            plan.statements.push(format!("DROP PUBLICATION {q}"));
            plan.statements.extend(create);
            plan.changes.push(format!(
                "recreate it {shown} in one transaction (it was {})",
                if state.all_tables {
                    "FOR ALL TABLES"
                } else {
                    "FOR TABLE …"
                }
            ));
        }
        Some(state) => {
            if explicit {
                let add: BTreeSet<u32> = members.difference(&state.members).copied().collect();
                let drop: BTreeSet<u32> = state
                    .members
                    .difference(&members)
                    .copied()
                    .filter(|o| by_oid.contains_key(o))
                    .collect();
                if !add.is_empty() {
                    plan.statements.push(format!(
                        "ALTER PUBLICATION {q} ADD TABLE {}",
                        names(&add, DbTable::sql).join(", ")
                    ));
                    plan.changes.push(format!(
                        "add {} to it",
                        name_list(&names(&add, DbTable::display))
                    ));
                }
                if !drop.is_empty() {
                    plan.statements.push(format!(
                        "ALTER PUBLICATION {q} DROP TABLE {}",
                        names(&drop, DbTable::sql).join(", ")
                    ));
                    plan.changes.push(format!(
                        "drop {} from it (no longer in [source] tables)",
                        name_list(&names(&drop, DbTable::display))
                    ));
                }
            }
            if state.via_root != via_root {
                plan.statements.push(format!(
                    "ALTER PUBLICATION {q} SET (publish_via_partition_root = {via_root})"
                ));
                plan.changes
                    .push(format!("set publish_via_partition_root = {via_root} on it"));
            }
        }
    }
    plan
}

fn absent_finding(absent: &[&String], tables: &[DbTable]) -> Finding {
    let shown: Vec<String> = absent.iter().map(|p| p.to_string()).collect();
    // Names are case-sensitive: `Orders` is not `orders`. Point at a near miss.
    let hints: Vec<String> = absent
        .iter()
        .filter_map(|p| {
            let lower = p.to_lowercase();
            tables
                .iter()
                .find(|t| {
                    spillway_core::pattern::table_matches(
                        std::slice::from_ref(&lower),
                        &t.schema.to_lowercase(),
                        &t.name.to_lowercase(),
                    )
                })
                .map(|t| format!("{p} → {}", t.display()))
        })
        .collect();
    let fix = if hints.is_empty() {
        "create the table, or correct or remove the entry in [source] tables".to_string()
    } else {
        format!(
            "names are case-sensitive; write {} in [source] tables (or create the table)",
            hints.join(", ")
        )
    };
    Finding::error(
        format!(
            "[source] tables names {}, but no such table exists in this database",
            name_list(&shown)
        ),
        fix,
    )
}

fn user_publication_problem(
    name: &str,
    patterns: &[String],
    tables: &[DbTable],
    state: &PubState,
) -> Option<Finding> {
    let q = quote_ident(name);
    let d = deliveries(patterns, tables, state);
    if !d.missing.is_empty() {
        let shown: Vec<String> = d.missing.iter().map(|t| t.display()).collect();
        let sql: Vec<String> = d.missing.iter().map(|t| t.sql()).collect();
        return Some(Finding::error(
            format!(
                "publication `{name}` (not managed by spillway, so left as it is) does not publish {}, named in [source] tables: their changes would never reach the change log",
                name_list(&shown)
            ),
            format!(
                "run ALTER PUBLICATION {q} ADD TABLE {}; or leave them out of [source] tables",
                sql.join(", ")
            ),
        ));
    }
    if d.is_clean() {
        return None;
    }
    let flipped = PubState {
        via_root: !state.via_root,
        ..state.clone()
    };
    let fix = if deliveries(patterns, tables, &flipped).is_clean() {
        format!(
            "run ALTER PUBLICATION {q} SET (publish_via_partition_root = {}); or add {} to [source] tables",
            !state.via_root,
            d.arrival_names()
        )
    } else {
        format!("add {} to [source] tables", d.arrival_names())
    };
    Some(Finding::error(
        format!(
            "publication `{name}` (publish_via_partition_root = {}) sends changes under names [source] tables does not let through, so they would be dropped: {}",
            state.via_root,
            d.misnamed_text()
        ),
        fix,
    ))
}

/// Where the rows of the configured tables arrive, given a publication.
struct Deliveries<'a> {
    /// Configured tables whose rows the publication does not send at all.
    missing: Vec<&'a DbTable>,
    /// (configured table, the table its rows arrive as) when the filter drops the latter.
    misnamed: BTreeSet<(String, String)>,
}

impl Deliveries<'_> {
    fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.misnamed.is_empty()
    }

    fn misnamed_text(&self) -> String {
        self.misnamed
            .iter()
            .map(|(t, n)| format!("rows of {t} arrive as {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn arrival_names(&self) -> String {
        let names: BTreeSet<&String> = self.misnamed.iter().map(|(_, n)| n).collect();
        names.into_iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Follows pgoutput's rules: a partition is published when it or an ancestor is; its
/// changes carry its own name, or with `publish_via_partition_root` the name of its
/// topmost published ancestor.
fn deliveries<'a>(patterns: &[String], tables: &'a [DbTable], state: &PubState) -> Deliveries<'a> {
    let by_oid: HashMap<u32, &DbTable> = tables.iter().map(|t| (t.oid, t)).collect();
    let chain = |t: &'a DbTable| {
        let mut out = vec![t];
        let mut cur = t;
        while let Some(p) = cur.parent.and_then(|p| by_oid.get(&p).copied()) {
            if out.len() > 64 || out.contains(&p) {
                break;
            }
            out.push(p);
            cur = p;
        }
        out
    };
    let direct = |t: &DbTable| {
        state.all_tables || state.members.contains(&t.oid) || state.schemas.contains(&t.schema)
    };
    let arrives_as = |t: &'a DbTable| -> Option<&'a DbTable> {
        let published: Vec<&DbTable> = chain(t).into_iter().filter(|a| direct(a)).collect();
        match published.last() {
            None => None,
            Some(top) if state.via_root => Some(top),
            Some(_) => Some(t),
        }
    };
    let wanted = |t: &DbTable| spillway_core::pattern::table_matches(patterns, &t.schema, &t.name);
    let mut out = Deliveries {
        missing: Vec::new(),
        misnamed: BTreeSet::new(),
    };
    for t in tables.iter().filter(|t| wanted(t)) {
        // The tables that hold t's rows: t itself, or its leaf partitions.
        let mut holders: Vec<&DbTable> = tables
            .iter()
            .filter(|l| !l.partitioned && chain(l).iter().any(|a| a.oid == t.oid))
            .collect();
        if holders.is_empty() {
            holders.push(t); // a partitioned table without partitions yet
        }
        let mut missing = false;
        for h in holders {
            match arrives_as(h) {
                None => missing = true,
                Some(n) if !wanted(n) => {
                    out.misnamed.insert((t.display(), n.display()));
                }
                Some(_) => {}
            }
        }
        if missing {
            out.missing.push(t);
        }
    }
    out
}

fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// The plain and partitioned tables of the current database (system schemas left out).
pub async fn database_tables(conn: &mut PgConnection) -> Result<Vec<DbTable>, PgError> {
    let rows = conn
        .simple_query(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, \
             (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
             ORDER BY 2, 3",
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten();
            Some(DbTable {
                oid: get(0)?.parse().ok()?,
                schema: get(1)?,
                name: get(2)?,
                partitioned: get(3).as_deref() == Some("p"),
                parent: get(4).and_then(|p| p.parse().ok()),
            })
        })
        .collect())
}

/// The tables `publication` sends, as `(schema, table)` (partition roots when it
/// publishes via the root).
pub async fn published_tables(
    conn: &mut PgConnection,
    publication: &str,
) -> Result<Vec<(String, String)>, PgError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = {} ORDER BY 1, 2",
            quote_literal(publication)
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            Some((it.next()??, it.next()??))
        })
        .collect())
}

/// The publication as it is, or `None` when there is none of that name.
pub async fn publication_state(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<PubState>, PgError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT oid, puballtables, pubviaroot, obj_description(oid, 'pg_publication') \
             FROM pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let get = |i: usize| row.get(i).cloned().flatten();
    let oid = get(0).unwrap_or_default();
    let mut state = PubState {
        owned: get(3).as_deref() == Some(MANAGED_MARK),
        all_tables: get(1).as_deref() == Some("t"),
        via_root: get(2).as_deref() == Some("t"),
        ..Default::default()
    };
    state.members = conn
        .simple_query(&format!(
            "SELECT prrelid FROM pg_publication_rel WHERE prpubid = {}",
            quote_literal(&oid)
        ))
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten()?.parse().ok())
        .collect();
    if conn.server_major_version().is_none_or(|v| v >= 15) {
        state.schemas = conn
            .simple_query(&format!(
                "SELECT n.nspname FROM pg_publication_namespace p JOIN pg_namespace n ON n.oid = p.pnnspid \
                 WHERE p.pnpubid = {}",
                quote_literal(&oid)
            ))
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
    }
    Ok(Some(state))
}

/// Reads the tables and the publication and plans (see [`plan_publication_for`]); changes
/// nothing. `spillway check` reports this plan.
pub async fn plan_publication(
    conn: &mut PgConnection,
    name: &str,
    patterns: &[String],
) -> Result<PublicationPlan, PgError> {
    let tables = database_tables(conn).await?;
    let state = publication_state(conn, name).await?;
    Ok(plan_publication_for(
        name,
        patterns,
        &tables,
        state.as_ref(),
    ))
}

/// Makes sure the publication sends every configured table, at every start.
///
/// * Missing: it is created and marked [`MANAGED_MARK`]. Exact table names give
///   `FOR TABLE …` (the configured tables, schema-qualified, quoted); wildcards or no
///   filter give `FOR ALL TABLES` (Spillway filters itself). Both with
///   `publish_via_partition_root = true`, so a partitioned table's changes carry its own
///   name (the one `[source] tables` names) and partitions added later are included —
///   unless the config names partitions whose rows would then arrive under the root's
///   name, in which case it is `false`.
/// * Spillway's own (marked): brought in line with the config — tables added to the config
///   are added, tables removed from it are dropped (PostgreSQL then stops decoding and
///   sending them), and a switch between exact names and wildcards recreates it in one
///   transaction. Changes to a table made before it was added are not captured (the slot
///   is past them); Spillway does not copy existing rows.
/// * The user's (unmarked): used as it is; when it does not publish a configured table,
///   or sends a configured partitioned table under a name the filter drops, nothing is
///   changed and [`PublicationPlan::problem`] says what and how to fix it (the caller
///   refuses to start). With no `[source] tables` the user's publication decides alone.
///
/// A configured name that is not a table is a problem too, whoever owns the publication.
/// Returns the plan, applied unless it has a problem.
///
/// Runs at start and before every reconnect ([`crate::capture::prepare`]), so a table
/// named exactly and dropped while Spillway runs stops it at the next reconnect, with the
/// same error. `FOR TABLES IN SCHEMA` entries someone added to Spillway's own publication
/// are left as they are. Reading and changing are two steps: DDL racing in between makes
/// the `ALTER` fail, and the start with it (a retry sees the new state).
pub async fn ensure_publication(
    conn: &mut PgConnection,
    name: &str,
    patterns: &[String],
) -> Result<PublicationPlan, PgError> {
    let plan = plan_publication(conn, name, patterns).await?;
    if plan.problem.is_none() && !plan.statements.is_empty() {
        // One query string: one implicit transaction, all or nothing.
        conn.simple_query(&plan.statements.join(";\n")).await?;
    }
    Ok(plan)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(oid: u32, schema: &str, name: &str) -> DbTable {
        DbTable {
            oid,
            schema: schema.into(),
            name: name.into(),
            partitioned: false,
            parent: None,
        }
    }

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    /// public.a (1), public.b (2), public.c (3), public."Odd Name" (4), other.x (5),
    /// public.m partitioned (6) with partitions public.m1 (7), public.m2 (8).
    fn db() -> Vec<DbTable> {
        let mut m = table(6, "public", "m");
        m.partitioned = true;
        let mut m1 = table(7, "public", "m1");
        m1.parent = Some(6);
        let mut m2 = table(8, "public", "m2");
        m2.parent = Some(6);
        vec![
            table(1, "public", "a"),
            table(2, "public", "b"),
            table(3, "public", "c"),
            table(4, "public", "Odd Name"),
            table(5, "other", "x"),
            m,
            m1,
            m2,
        ]
    }

    fn owned_for(members: &[u32], via_root: bool) -> PubState {
        PubState {
            owned: true,
            via_root,
            members: members.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_publication_lists_the_configured_tables_quoted_and_is_marked() {
        let plan = plan_publication_for("spill way", &pats(&["public.Odd Name", "a"]), &db(), None);
        assert_eq!(plan.problem, None);
        assert_eq!(
            plan.statements,
            vec![
                "CREATE PUBLICATION \"spill way\" FOR TABLE \"public\".\"a\", \"public\".\"Odd Name\" WITH (publish_via_partition_root = true)".to_string(),
                "COMMENT ON PUBLICATION \"spill way\" IS 'managed by spillway'".to_string(),
            ]
        );
        let all = plan_publication_for("p", &pats(&["public.*"]), &db(), None);
        assert!(
            all.statements[0].starts_with(
                "CREATE PUBLICATION \"p\" FOR ALL TABLES WITH (publish_via_partition_root = true)"
            ),
            "{all:?}"
        );
        let none = plan_publication_for("p", &[], &db(), None);
        assert!(none.statements[0].contains("FOR ALL TABLES"), "{none:?}");
    }

    #[test]
    fn spillways_publication_follows_tables_added_and_removed() {
        let state = owned_for(&[1, 3], true);
        let plan = plan_publication_for(
            "p",
            &pats(&["public.a", "public.b", "public.Odd Name"]),
            &db(),
            Some(&state),
        );
        assert_eq!(plan.problem, None);
        assert_eq!(
            plan.statements,
            vec![
                "ALTER PUBLICATION \"p\" ADD TABLE \"public\".\"b\", \"public\".\"Odd Name\""
                    .to_string(),
                "ALTER PUBLICATION \"p\" DROP TABLE \"public\".\"c\"".to_string(),
            ]
        );
        assert!(
            plan.changes[0].contains("public.b, public.Odd Name"),
            "{plan:?}"
        );
        // in line: nothing to do
        let same = plan_publication_for("p", &pats(&["public.a", "public.c"]), &db(), Some(&state));
        assert_eq!(
            same,
            PublicationPlan {
                exists: true,
                owned: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn switching_between_names_and_patterns_recreates_in_one_go() {
        let to_all = plan_publication_for(
            "p",
            &pats(&["public.*"]),
            &db(),
            Some(&owned_for(&[1], true)),
        );
        assert_eq!(to_all.problem, None);
        assert_eq!(to_all.statements[0], "DROP PUBLICATION \"p\"");
        assert!(
            to_all.statements[1].contains("FOR ALL TABLES"),
            "{to_all:?}"
        );
        assert!(
            to_all.statements[2].starts_with("COMMENT ON PUBLICATION"),
            "{to_all:?}"
        );
        let all = PubState {
            all_tables: true,
            ..owned_for(&[], true)
        };
        let unchanged = plan_publication_for("p", &pats(&["other.*"]), &db(), Some(&all));
        assert!(unchanged.statements.is_empty(), "{unchanged:?}");
        let to_names = plan_publication_for("p", &pats(&["public.a"]), &db(), Some(&all));
        assert_eq!(to_names.statements[0], "DROP PUBLICATION \"p\"");
        assert!(
            to_names.statements[1].contains("FOR TABLE \"public\".\"a\" "),
            "{to_names:?}"
        );
    }

    #[test]
    fn a_users_publication_is_never_changed_and_a_missing_table_is_refused() {
        let user = PubState {
            members: [1].into(),
            ..Default::default()
        };
        let plan = plan_publication_for(
            "p",
            &pats(&["public.a", "public.b", "public.Odd Name"]),
            &db(),
            Some(&user),
        );
        assert!(plan.statements.is_empty());
        assert!(!plan.owned);
        let problem = plan.problem.expect("refused");
        assert_eq!(problem.severity, Severity::Error);
        assert!(
            problem
                .what
                .contains("does not publish public.b, public.Odd Name"),
            "{problem:?}"
        );
        assert_eq!(
            problem.fix,
            "run ALTER PUBLICATION \"p\" ADD TABLE \"public\".\"b\", \"public\".\"Odd Name\"; or leave them out of [source] tables"
        );
        // what it publishes is enough
        assert_eq!(
            plan_publication_for("p", &pats(&["public.a"]), &db(), Some(&user)).problem,
            None
        );
        // no [source] tables: the user's publication decides
        assert_eq!(
            plan_publication_for("p", &[], &db(), Some(&user)).problem,
            None
        );
        // FOR ALL TABLES and FOR TABLES IN SCHEMA cover their tables
        let all = PubState {
            all_tables: true,
            ..Default::default()
        };
        assert_eq!(
            plan_publication_for("p", &pats(&["public.*"]), &db(), Some(&all)).problem,
            None
        );
        let schema = PubState {
            schemas: ["other".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(
            plan_publication_for("p", &pats(&["other.x"]), &db(), Some(&schema)).problem,
            None
        );
        assert!(
            plan_publication_for("p", &pats(&["public.a"]), &db(), Some(&schema))
                .problem
                .is_some()
        );
    }

    #[test]
    fn a_configured_name_that_is_no_table_is_refused_with_a_case_hint() {
        for existing in [None, Some(owned_for(&[1], true)), Some(PubState::default())] {
            let plan = plan_publication_for(
                "p",
                &pats(&["public.a", "public.nosuch"]),
                &db(),
                existing.as_ref(),
            );
            let problem = plan.problem.expect("refused");
            assert!(plan.statements.is_empty());
            assert!(
                problem.what.contains("public.nosuch") && !problem.what.contains("public.a"),
                "{problem:?}"
            );
        }
        let hint = plan_publication_for("p", &pats(&["public.odd name"]), &db(), None)
            .problem
            .unwrap();
        assert!(
            hint.fix.contains("public.odd name → public.Odd Name"),
            "{hint:?}"
        );
        // a pattern matching nothing is no error (preflight warns)
        assert_eq!(
            plan_publication_for("p", &pats(&["nothing.*"]), &db(), None).problem,
            None
        );
    }

    #[test]
    fn partitioned_tables_arrive_under_a_configured_name() {
        // The user's FOR TABLE m without publish_via_partition_root sends m1 and m2.
        let user = PubState {
            members: [6].into(),
            ..Default::default()
        };
        let problem = plan_publication_for("p", &pats(&["public.m"]), &db(), Some(&user))
            .problem
            .unwrap();
        assert!(
            problem
                .what
                .contains("rows of public.m arrive as public.m1"),
            "{problem:?}"
        );
        assert!(
            problem
                .fix
                .starts_with("run ALTER PUBLICATION \"p\" SET (publish_via_partition_root = true)"),
            "{problem:?}"
        );
        // naming the partitions too lets them through
        assert_eq!(
            plan_publication_for("p", &pats(&["public.m*"]), &db(), Some(&user)).problem,
            None
        );
        let via_root = PubState {
            via_root: true,
            ..user
        };
        assert_eq!(
            plan_publication_for("p", &pats(&["public.m"]), &db(), Some(&via_root)).problem,
            None
        );
        // Spillway's own is switched
        let plan = plan_publication_for(
            "p",
            &pats(&["public.m"]),
            &db(),
            Some(&owned_for(&[6], false)),
        );
        assert_eq!(
            plan.statements,
            vec!["ALTER PUBLICATION \"p\" SET (publish_via_partition_root = true)".to_string()]
        );
        // a partition named alone under FOR ALL TABLES needs publish_via_partition_root = false
        let plan = plan_publication_for("p", &pats(&["public.m1", "other.*"]), &db(), None);
        assert_eq!(plan.problem, None);
        assert!(
            plan.statements[0]
                .ends_with("FOR ALL TABLES WITH (publish_via_partition_root = false)"),
            "{plan:?}"
        );
        // a partitioned table (m) and a partition of another (p1) under FOR ALL TABLES:
        // no setting delivers both, and the fix names what would
        let mut tables = db();
        let mut p = table(9, "public", "p");
        p.partitioned = true;
        let mut p1 = table(10, "public", "p1");
        p1.parent = Some(9);
        tables.extend([p, p1]);
        let plan = plan_publication_for(
            "p",
            &pats(&["public.m", "public.p1", "other.*"]),
            &tables,
            None,
        );
        let problem = plan.problem.expect("refused");
        assert!(plan.statements.is_empty());
        assert!(
            problem
                .what
                .contains("rows of public.p1 arrive as public.p"),
            "{problem:?}"
        );
        assert_eq!(problem.fix, "add public.p to [source] tables");
        let fixed = plan_publication_for(
            "p",
            &pats(&["public.m", "public.p1", "public.p", "other.*"]),
            &tables,
            None,
        );
        assert_eq!(fixed.problem, None);
    }
}
