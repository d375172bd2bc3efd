//! Appends every row change to a JSON-lines audit file (reference 004, "Audit Log").
//!
//! Each line holds the change with its old and new values. The program is the named
//! consumer `audit`: after each batch it writes the lines, fsyncs the file and only
//! then stores the checkpoint, so a crash never loses an entry. A crash between the
//! fsync and the checkpoint would make the next run receive that batch again; the
//! program reads the last lsn from the end of the file on start and skips what it has
//! already written, so every change is in the file exactly once.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 AUDIT_FILE=audit.jsonl \
//!   cargo run -p spillway-client --example audit_log
//! ```

use serde_json::json;
use spillway_client::{Client, StreamItem};
use std::error::Error;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

const CONSUMER: &str = "audit";

/// The lsn of the last entry in the file (0 when there is none).
fn last_written_lsn(path: &Path) -> Result<u64, Box<dyn Error>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(0);
    };
    let mut last = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        // a torn last line (crash mid-write) is not counted; it is written again
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            last = v["lsn"].as_u64().unwrap_or(last);
        }
    }
    Ok(last)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("audit_log: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let path = std::env::var("AUDIT_FILE").unwrap_or_else(|_| "audit.jsonl".into());
    let path = Path::new(&path);
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }

    let written = last_written_lsn(path)?;
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // Resume after the server-side checkpoint (the beginning on the first run).
    let stream = client
        .stream_changes()
        .consumer(CONSUMER)
        .batch_size(1000)
        .batch_timeout(Duration::from_millis(200))
        .await?;
    println!(
        "auditing {url} into {} (last entry: lsn {written})",
        path.display()
    );

    loop {
        let Some(batch) = stream.next_item_batch().await? else {
            return Ok(());
        };
        let mut out = Vec::new();
        let mut entries = 0;
        for item in &batch {
            let entry = match item {
                StreamItem::Change(c) if c.lsn > written => json!({
                    "lsn": c.lsn,
                    "id": c.id,
                    "timestamp": c.timestamp,
                    "entity": c.entity,
                    "operation": c.operation,
                    "entity_id": c.entity_id,
                    "old_values": c.old_data,
                    "new_values": c.new_data,
                    "xid": c.tx.xid,
                }),
                StreamItem::Change(_) => continue, // already in the file
                StreamItem::SchemaChange(s) if s.lsn > written => json!({
                    "lsn": s.lsn,
                    "timestamp": s.timestamp,
                    "entity": s.entity,
                    "schema_change": s.columns,
                }),
                StreamItem::SchemaChange(_) | StreamItem::Message(_) => continue,
                // History is gone and cannot be re-read: the trail records the hole.
                StreamItem::RequeryRequired {
                    requested_lsn,
                    oldest_lsn,
                } => {
                    json!({"gap": {"from_lsn": requested_lsn, "to_lsn": oldest_lsn.saturating_sub(1)}})
                }
            };
            serde_json::to_writer(&mut out, &entry)?;
            out.push(b'\n');
            entries += 1;
        }
        file.write_all(&out)?;
        file.sync_data()?;
        if let Some(lsn) = stream.last_lsn() {
            client.checkpoint(CONSUMER, lsn).await?;
            println!("lsn {lsn}: {entries} entries appended");
        }
    }
}
