//! Replicates row changes into a second PostgreSQL database (reference 004, "Data
//! Replication").
//!
//! Every change of the captured tables is applied to the table of the same name in
//! `TARGET_URL`: inserts, snapshot reads and updates as `INSERT … ON CONFLICT (key) DO
//! UPDATE` (idempotent, so a replayed change is harmless), deletes as `DELETE … WHERE
//! key`, truncates as `TRUNCATE`. The target tables must exist with the same columns and
//! a primary key. The program is the named consumer `replica`: it stores the checkpoint
//! after each applied batch, which it applies in one transaction.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 TARGET_URL=postgres://postgres@127.0.0.1:5433/shop \
//!   cargo run -p spillway-client --example replication
//! ```

use serde_json::{Map, Value};
use spillway_client::{ChangeEvent, Client, Error, Operation};
use spillway_postgres::wire::{quote_ident, quote_literal};
use std::time::Duration;

const CONSUMER: &str = "replica";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("replication: {e}");
        std::process::exit(1);
    }
}

/// A JSON value as an SQL literal (PostgreSQL casts it to the column's type).
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => quote_literal(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => quote_literal(&n.to_string()),
        other => quote_literal(&other.to_string()),
    }
}

fn table(change: &ChangeEvent) -> String {
    format!(
        "{}.{}",
        quote_ident(&change.schema),
        quote_ident(&change.table)
    )
}

fn where_key(key: &Map<String, Value>) -> String {
    key.iter()
        .map(|(k, v)| format!("{} = {}", quote_ident(k), literal(v)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The statement that applies `change`, if any.
fn statement(change: &ChangeEvent) -> Option<String> {
    match change.operation {
        Operation::Insert | Operation::Update | Operation::Read => {
            let row = change.new_data.as_ref()?;
            let key = change.entity_id.as_ref()?;
            let cols: Vec<String> = row.keys().map(|k| quote_ident(k)).collect();
            let vals: Vec<String> = row.values().map(literal).collect();
            let keys: Vec<String> = key.keys().map(|k| quote_ident(k)).collect();
            let sets: Vec<String> = row
                .keys()
                .filter(|k| !key.contains_key(*k))
                .map(|k| format!("{0} = EXCLUDED.{0}", quote_ident(k)))
                .collect();
            let on_conflict = if sets.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", sets.join(", "))
            };
            Some(format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
                table(change),
                cols.join(", "),
                vals.join(", "),
                keys.join(", ")
            ))
        }
        Operation::Delete => Some(format!(
            "DELETE FROM {} WHERE {}",
            table(change),
            where_key(change.entity_id.as_ref()?)
        )),
        Operation::Truncate => Some(format!("TRUNCATE {}", table(change))),
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let target = std::env::var("TARGET_URL").map_err(|_| "set TARGET_URL to the replica's DSN")?;
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }
    let cfg = spillway_postgres::ConnectConfig::parse(&target)?;
    let mut db = spillway_postgres::PgConnection::connect(&cfg, false).await?;
    let stream = client
        .stream_changes()
        .consumer(CONSUMER)
        .batch_size(1000)
        .batch_timeout(Duration::from_millis(200))
        .await?;
    eprintln!("replicating {url} into {target}");
    loop {
        let batch = match stream.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(()),
            Err(e @ Error::RequeryRequired { .. }) => {
                // The replica can no longer be brought up to date change by change.
                return Err(format!(
                    "{e}; copy the tables again, then move the checkpoint of `{CONSUMER}`"
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let mut sql = String::from("BEGIN;");
        for change in &batch {
            match statement(change) {
                Some(s) => {
                    sql.push_str(&s);
                    sql.push(';');
                }
                None => eprintln!(
                    "replication: lsn {} of {} has no key or row; skipped",
                    change.lsn, change.entity
                ),
            }
        }
        sql.push_str("COMMIT;");
        db.simple_query(&sql).await?;
        if let Some(last) = batch.last() {
            client.checkpoint(CONSUMER, last.lsn).await?;
        }
    }
}
