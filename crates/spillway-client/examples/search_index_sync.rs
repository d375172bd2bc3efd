//! Keeps a search index in sync with one table (reference 004, "Search Index Sync").
//!
//! The "index" is an in-memory map from the row key to the row document, standing in for
//! Elasticsearch or Typesense. The program is a named consumer: it resumes after its
//! server-side checkpoint, stores a checkpoint every `CHECKPOINT_EVERY` events, and
//! rebuilds the index from PostgreSQL when the stream says `requery_required`.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 ENTITY=public.products \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop \
//!   cargo run -p spillway-client --example search_index_sync
//! ```
//!
//! `SPILLWAY_TOKEN` is sent as the bearer token when set. Without `DATABASE_URL` a
//! rebuild starts from an empty index.
//!
//! On a restart the process has lost its in-memory index, so it rebuilds from the table
//! first and then follows the stream from its checkpoint; upserts and deletes are
//! idempotent, so events the table already reflects are harmless when applied again.

use serde_json::{Map, Value};
use spillway_client::{ChangeEvent, Client, Operation, StreamItem};
use std::collections::{BTreeMap, HashMap};
use std::error::Error;

const CONSUMER: &str = "search-sync";
const CHECKPOINT_EVERY: u64 = 100;

type Document = Map<String, Value>;

struct SearchIndex {
    /// Key (the row's key columns as JSON) → document.
    docs: BTreeMap<String, Document>,
    /// Key columns of the table, learned from `schema_change` events.
    key_columns: Vec<String>,
}

impl SearchIndex {
    fn upsert(&mut self, key: String, doc: Document) {
        self.docs.insert(key, doc);
    }

    fn remove(&mut self, key: &str) {
        self.docs.remove(key);
    }

    /// The document key of a row: its key columns, as compact JSON.
    fn key_of(&self, row: &Document) -> String {
        let key: Map<String, Value> = self
            .key_columns
            .iter()
            .map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null)))
            .collect();
        Value::Object(key).to_string()
    }

    fn apply(&mut self, change: ChangeEvent) {
        let key = change.entity_id.map(|k| Value::Object(k).to_string());
        match (change.operation, key) {
            (Operation::Insert | Operation::Update | Operation::Read, Some(key)) => {
                if let Some(doc) = change.new_data {
                    // an update that changed the key: the old document goes
                    if let Some(old) = &change.old_data {
                        let old_key = self.key_of(old);
                        if old_key != key {
                            self.remove(&old_key);
                        }
                    }
                    self.upsert(key, doc);
                }
            }
            (Operation::Delete, Some(key)) => self.remove(&key),
            (Operation::Truncate, _) => self.docs.clear(),
            (_, None) => eprintln!("lsn {}: row without key, not indexed", change.lsn),
        }
    }

    /// Throws the index away and reads the table again.
    async fn rebuild(&mut self, entity: &str) -> Result<(), Box<dyn Error>> {
        self.docs.clear();
        let Ok(dsn) = std::env::var("DATABASE_URL") else {
            eprintln!("rebuild: DATABASE_URL is not set; starting from an empty index");
            return Ok(());
        };
        let (schema, table) = entity.split_once('.').unwrap_or(("public", entity));
        let cfg = spillway_postgres::ConnectConfig::parse(&dsn)?;
        let mut db = spillway_postgres::PgConnection::connect(&cfg, false).await?;
        let sql = format!(
            "SELECT row_to_json(t)::text FROM {}.{} t",
            spillway_postgres::wire::quote_ident(schema),
            spillway_postgres::wire::quote_ident(table)
        );
        let rows = db.simple_query(&sql).await;
        db.close().await;
        for row in rows? {
            if let Some(Some(json)) = row.first() {
                if let Value::Object(doc) = serde_json::from_str(json)? {
                    let key = self.key_of(&doc);
                    self.upsert(key, doc);
                }
            }
        }
        println!("rebuild: {} documents from {entity}", self.docs.len());
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("search_index_sync: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let entity = std::env::var("ENTITY").unwrap_or_else(|_| "public.products".into());
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }

    let mut index = SearchIndex {
        docs: BTreeMap::new(),
        key_columns: vec!["id".into()],
    };
    index.rebuild(&entity).await?;

    let stream = client
        .stream_changes()
        .consumer(CONSUMER)
        .entities([entity.as_str()])
        .await?;
    println!("following {entity} at {url} as consumer `{CONSUMER}`");

    let mut since_checkpoint = 0u64;
    let mut counts: HashMap<Operation, u64> = HashMap::new();
    while let Some(item) = stream.next_item().await? {
        match item {
            StreamItem::Change(change) => {
                *counts.entry(change.operation).or_default() += 1;
                index.apply(change);
            }
            StreamItem::SchemaChange(schema) => {
                index.key_columns = schema
                    .columns
                    .iter()
                    .filter(|c| c.key)
                    .map(|c| c.name.clone())
                    .collect();
            }
            StreamItem::Message(_) => {}
            StreamItem::RequeryRequired {
                requested_lsn,
                oldest_lsn,
            } => {
                eprintln!(
                    "events {requested_lsn}..{oldest_lsn} are no longer retained; rebuilding"
                );
                index.rebuild(&entity).await?;
            }
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            if let Some(lsn) = stream.last_lsn() {
                client.checkpoint(CONSUMER, lsn).await?;
                println!(
                    "checkpoint {lsn}: {} documents; inserts {}, updates {}, deletes {}",
                    index.docs.len(),
                    counts.get(&Operation::Insert).unwrap_or(&0),
                    counts.get(&Operation::Update).unwrap_or(&0),
                    counts.get(&Operation::Delete).unwrap_or(&0),
                );
            }
            since_checkpoint = 0;
        }
    }
    Ok(())
}
