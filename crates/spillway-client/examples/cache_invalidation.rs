//! Invalidates cache entries when their rows change (reference 004, "Cache Invalidation").
//!
//! Cache keys are `entity:key`, e.g. `public.users:{"id":7}`. Updates and deletes evict
//! the row's key (and the old key when an update changed it); a truncate, a schema change
//! or a row without a key evicts the table's keys; `requery_required` (invalidations were
//! missed) flushes everything. Inserts need nothing: a new row was not cached.
//!
//! The cache here is a stand-in that prints the commands a Redis client would send
//! (`DEL key`, `DEL prefix*` — in Redis a SCAN + DEL); put your cache client in `Cache`.
//!
//! A cache only cares about changes from now on, so this consumer starts at "now" and
//! keeps no checkpoint. That is right for a cache that lives and dies with the process.
//! For a shared cache (Redis) that outlives it, use `.consumer(NAME)` plus
//! `client.checkpoint(..)`, so that changes made while the process was down still evict.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 ENTITIES=public.users,public.products \
//!   cargo run -p spillway-client --example cache_invalidation
//! ```

use serde_json::{Map, Value};
use spillway_client::{Client, Operation, StreamItem};
use std::error::Error;
use std::time::Duration;

/// Where evictions go.
#[derive(Default)]
struct Cache {
    evictions: u64,
}

impl Cache {
    fn invalidate(&mut self, key: &str) {
        println!("DEL {key}");
        self.evictions += 1;
    }

    fn invalidate_prefix(&mut self, prefix: &str) {
        println!("DEL {prefix}*");
        self.evictions += 1;
    }

    fn flush_all(&mut self) {
        println!("FLUSHDB");
        self.evictions += 1;
    }
}

fn cache_key(entity: &str, key: &Map<String, Value>) -> String {
    format!("{entity}:{}", Value::Object(key.clone()))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("cache_invalidation: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let entities = std::env::var("ENTITIES").unwrap_or_else(|_| "public.*".into());
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }
    let mut cache = Cache::default();

    let stream = client
        .stream_changes()
        .entities(entities.split(','))
        .operations([Operation::Update, Operation::Delete, Operation::Truncate])
        .batch_size(500)
        .batch_timeout(Duration::from_millis(20))
        .await?;
    eprintln!("invalidating on changes of {entities} from {url}");

    loop {
        // One round of evictions per server flush.
        let Some(batch) = stream.next_item_batch().await? else {
            return Ok(()); // the stream ended (only with reconnect(false))
        };
        for item in batch {
            match item {
                StreamItem::Change(change) => match (change.operation, &change.entity_id) {
                    (Operation::Truncate, _) | (_, None) => {
                        cache.invalidate_prefix(&format!("{}:", change.entity));
                    }
                    (_, Some(key)) => {
                        let new_key = cache_key(&change.entity, key);
                        cache.invalidate(&new_key);
                        // an update that changed the key also stales the old key
                        if let Some(old) = &change.old_data {
                            let old_key: Map<String, Value> = key
                                .keys()
                                .filter_map(|k| Some((k.clone(), old.get(k)?.clone())))
                                .collect();
                            let old_key = cache_key(&change.entity, &old_key);
                            if old_key != new_key {
                                cache.invalidate(&old_key);
                            }
                        }
                    }
                },
                // cached rows have the old shape
                StreamItem::SchemaChange(s) => cache.invalidate_prefix(&format!("{}:", s.entity)),
                StreamItem::Message(_) => {}
                StreamItem::RequeryRequired { .. } => cache.flush_all(),
            }
        }
        eprintln!(
            "up to lsn {:?}: {} evictions so far",
            stream.last_lsn(),
            cache.evictions
        );
    }
}
