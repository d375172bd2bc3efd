//! Publishes every row change as a domain event (reference 004, "Event Publishing").
//!
//! Each change becomes `{"type": "<entity>.<operation>", "timestamp": …, "data":
//! {"entityId": …, "old": …, "new": …}}`, one JSON line per event, appended to
//! `EVENTS_FILE` (standing in for the message queue: a file is what needs no broker to
//! try). The program is the named consumer `event-publisher`: after each batch it
//! writes and fsyncs the lines, then stores the checkpoint, so nothing is lost; a crash
//! between the two publishes that batch again, and the event's `id` (the change's stable
//! id) lets a subscriber drop the repeat.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 EVENTS_FILE=events.jsonl \
//!   cargo run -p spillway-client --example event_publishing
//! ```

use serde_json::json;
use spillway_client::{Client, Error};
use std::io::Write;
use std::time::Duration;

const CONSUMER: &str = "event-publisher";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("event_publishing: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let path = std::env::var("EVENTS_FILE").unwrap_or_else(|_| "events.jsonl".into());
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }
    let mut queue = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let stream = client
        .stream_changes()
        .consumer(CONSUMER)
        .batch_size(500)
        .batch_timeout(Duration::from_millis(100))
        .await?;
    eprintln!("publishing the changes of {url} into {path}");
    loop {
        let batch = match stream.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(()),
            // History was lost: subscribers are told, then the stream goes on.
            Err(Error::RequeryRequired {
                requested_lsn,
                oldest_lsn,
            }) => {
                let gap = json!({"type": "events.missing", "from_lsn": requested_lsn, "to_lsn": oldest_lsn - 1});
                writeln!(queue, "{gap}")?;
                queue.sync_data()?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for change in &batch {
            let event = json!({
                "type": format!("{}.{}", change.entity, change.operation),
                "id": change.id,
                "timestamp": change.timestamp,
                "data": {
                    "entityId": change.entity_id,
                    "old": change.old_data,
                    "new": change.new_data,
                },
            });
            serde_json::to_writer(&mut out, &event)?;
            out.push(b'\n');
        }
        queue.write_all(&out)?;
        queue.sync_data()?;
        if let Some(last) = batch.last() {
            client.checkpoint(CONSUMER, last.lsn).await?;
        }
    }
}
