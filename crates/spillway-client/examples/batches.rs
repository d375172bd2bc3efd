//! Processes changes in batches with a checkpoint at each batch boundary (reference 004,
//! "Batch Processing").
//!
//! Reads what the log holds up to now (`until_caught_up`), in batches of up to 100 that
//! the server flushes at the latest after a second, and "bulk indexes" the inserts of
//! each batch (here: counts them per table). The checkpoint of the named consumer
//! `bulk-indexer` moves after each batch, so the next run goes on where this one stopped.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 cargo run -p spillway-client --example batches
//! ```

use spillway_client::{ChangeEvent, Client, Error, Operation};
use std::collections::BTreeMap;
use std::time::Duration;

const CONSUMER: &str = "bulk-indexer";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("batches: {e}");
        std::process::exit(1);
    }
}

fn bulk_index(inserts: &[&ChangeEvent], counts: &mut BTreeMap<String, u64>) {
    for c in inserts {
        *counts.entry(c.entity.clone()).or_default() += 1;
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }
    let stream = client
        .stream_changes()
        .consumer(CONSUMER)
        .batch_size(100)
        .batch_timeout(Duration::from_secs(1))
        .until_caught_up()
        .await?;
    let mut counts = BTreeMap::new();
    let mut batches = 0;
    loop {
        let batch = match stream.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e @ Error::RequeryRequired { .. }) => {
                eprintln!("batches: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let inserts: Vec<&ChangeEvent> = batch
            .iter()
            .filter(|c| c.operation == Operation::Insert)
            .collect();
        bulk_index(&inserts, &mut counts);
        if let Some(last) = batch.last() {
            client.checkpoint(CONSUMER, last.lsn).await?;
        }
        batches += 1;
    }
    println!("{batches} batches; inserts per table: {counts:?}");
    Ok(())
}
