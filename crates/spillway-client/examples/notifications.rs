//! Sends a notification when an order ships (reference 004, "Real-Time Notifications").
//!
//! Follows `ENTITY` (default `public.orders`) for updates only, and notifies — here:
//! prints one line — when `status` changes to `shipped`. Comparing the old and the new
//! status needs the row before the update, which PostgreSQL sends only for tables with
//! `REPLICA IDENTITY FULL` (`ALTER TABLE orders REPLICA IDENTITY FULL`); without it
//! `old_data` holds the key alone and this program says so once.
//!
//! ```sh
//! SPILLWAY_URL=http://127.0.0.1:7654 ENTITY=public.orders \
//!   cargo run -p spillway-client --example notifications
//! ```

use spillway_client::{Client, Error, Operation};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("notifications: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPILLWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:7654".into());
    let entity = std::env::var("ENTITY").unwrap_or_else(|_| "public.orders".into());
    let mut client = Client::new(&url)?;
    if let Ok(token) = std::env::var("SPILLWAY_TOKEN") {
        client = client.with_token(token);
    }
    let stream = client
        .stream_changes()
        .entities([entity.as_str()])
        .operations([Operation::Update])
        .await?;
    let mut warned = false;
    loop {
        let change = match stream.next().await {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            // Notifications are about now: missed ones are not sent late.
            Err(e @ Error::RequeryRequired { .. }) => {
                eprintln!("notifications: {e}; going on with new changes");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let old_status = change.old_data.as_ref().and_then(|o| o.get("status"));
        let new_status = change.new_data.as_ref().and_then(|n| n.get("status"));
        if old_status.is_none() && !warned {
            eprintln!(
                "notifications: {} sends no old row; run ALTER TABLE {} REPLICA IDENTITY FULL to compare statuses",
                change.entity, change.entity
            );
            warned = true;
        }
        if old_status != new_status && new_status.and_then(|s| s.as_str()) == Some("shipped") {
            let user = change.new_data.as_ref().and_then(|n| n.get("user_id"));
            println!(
                "order_shipped order={} user={}",
                serde_json::to_string(&change.entity_id)?,
                user.map_or("?".to_string(), ToString::to_string)
            );
        }
    }
}
