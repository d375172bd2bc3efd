//! Reference 004's Rust snippets, compiled against `spillway-client` with only the crate
//! name changed (`ormdb_client` → `spillway_client`), each inside a function with the
//! helpers the reference leaves undefined (`process_change`, `save_checkpoint`, …) as
//! stubs that record what they were given; then run against a real server to check that
//! they behave as the reference says.
//!
//! Verbatim: basic streaming's loop, start positions, the entity and operation filters,
//! checkpointing, batch processing, handling gaps, monitoring lag, handling schema
//! changes. Changed where the reference cannot compile against any Rust type (each
//! marked `CHANGED:`):
//! - a three-arm `match` on `Operation`: Spillway's has five (`Truncate`, and `Read` for
//!   snapshot rows); the extra arms are added;
//! - `hex::encode(change.entity_id)`: the key is the row's key columns (a JSON object),
//!   not 16 bytes;
//! - the audit entry moves fields out of `change` and then borrows it
//!   (`extract_user_id(&change)`): E0382 in any Rust; the borrow is taken first;
//! - reconnection's `for change in stream { match change { Ok(c) … Err(e) … } }` and
//!   checkpointing's `for change in stream { change.lsn … }` need two different item
//!   types; the iterator yields changes (as in checkpointing and five other snippets) and
//!   reports why it stopped through `take_error`.

#![allow(
    unused_mut,
    unused_imports,
    unused_variables,
    unused_assignments,
    dead_code,
    clippy::all
)]

use spillway_client::cdc::ChangeStream;
use spillway_client::{ChangeEvent, Client, Operation};
use std::sync::Mutex;
use std::time::Duration;

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What the stubs saw.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CHECKPOINT: Mutex<Option<u64>> = Mutex::new(None);
/// The stubs fail (ending the snippet's loop with `?`) once this lsn was processed.
static STOP_AT: Mutex<u64> = Mutex::new(u64::MAX);

fn seen(what: String) {
    SEEN.lock().unwrap().push(what);
}

fn stop_check(lsn: u64) -> Res {
    if lsn >= *STOP_AT.lock().unwrap() {
        return Err("stop: the test has seen enough".into());
    }
    Ok(())
}

async fn process_change(change: &ChangeEvent) -> Res {
    seen(format!(
        "{} {} {}",
        change.lsn, change.entity, change.operation
    ));
    stop_check(change.lsn)
}

fn load_checkpoint() -> Option<u64> {
    *CHECKPOINT.lock().unwrap()
}

fn save_checkpoint(lsn: u64) -> Res {
    *CHECKPOINT.lock().unwrap() = Some(lsn);
    stop_check(lsn)
}

async fn bulk_index_to_search(inserts: Vec<&ChangeEvent>) -> Res {
    for c in inserts {
        seen(format!("{} {} {}", c.lsn, c.entity, c.operation));
    }
    Ok(())
}

fn alert(what: &str) {
    seen(format!("alert {what}"));
}

fn is_compatible_schema(_change: &ChangeEvent) -> bool {
    true
}

fn extract_user_id(change: &ChangeEvent) -> Option<i64> {
    change.new_data.as_ref()?.get("user_id")?.as_i64()
}

macro_rules! log_warn {
    ($($t:tt)*) => { seen(format!("warn {}", format!($($t)*))) };
}
macro_rules! log_error {
    ($($t:tt)*) => { seen(format!("error {}", format!($($t)*))) };
}
mod log {
    pub(crate) use log_error as error;
    pub(crate) use log_warn as warn;
}

struct Cache;
impl Cache {
    async fn invalidate(&self, key: &str) -> Res {
        seen(format!("invalidate {key}"));
        Ok(())
    }
}

#[derive(Debug)]
struct AuditEntry {
    timestamp: i64,
    entity_type: String,
    entity_id: Option<serde_json::Map<String, serde_json::Value>>,
    operation: Operation,
    old_values: Option<serde_json::Map<String, serde_json::Value>>,
    new_values: Option<serde_json::Map<String, serde_json::Value>>,
    user_id: Option<i64>,
}

struct AuditLog;
impl AuditLog {
    async fn append(&self, e: AuditEntry) -> Res {
        seen(format!("audit {} {}", e.entity_type, e.operation));
        Ok(())
    }
}

struct Target;
impl Target {
    async fn insert(&self, entity: &str, _row: serde_json::Map<String, serde_json::Value>) -> Res {
        seen(format!("replicate insert {entity}"));
        Ok(())
    }
    async fn update(
        &self,
        entity: &str,
        _id: Option<serde_json::Map<String, serde_json::Value>>,
        _row: serde_json::Map<String, serde_json::Value>,
    ) -> Res {
        seen(format!("replicate update {entity}"));
        Ok(())
    }
    async fn delete(
        &self,
        entity: &str,
        _id: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Res {
        seen(format!("replicate delete {entity}"));
        Ok(())
    }
}

// --- Streaming Changes: Basic Streaming ---------------------------------------------

async fn basic_streaming(client: &Client) -> Res {
    // Start streaming from current position
    let mut stream = client.stream_changes().await?;
    while let Some(change) = stream.next().await? {
        match change.operation {
            Operation::Insert => {
                println!("New {}: {:?}", change.entity, change.entity_id);
            }
            Operation::Update => {
                println!("Updated {}: {:?}", change.entity, change.entity_id);
            }
            Operation::Delete => {
                println!("Deleted {}: {:?}", change.entity, change.entity_id);
            }
            // CHANGED: two more operations.
            Operation::Truncate | Operation::Read => {}
        }
        process_change(&change).await?;
    }
    Ok(())
}

// --- Start from Specific Position ------------------------------------------------------

async fn start_positions(client: &Client, start_time: std::time::SystemTime) -> Res {
    // Start from a specific LSN (useful for recovery)
    let stream = client.stream_changes().from_lsn(12345).await?;
    // Start from a timestamp
    let stream = client.stream_changes().from_timestamp(start_time).await?;
    // Start from the beginning (full replay)
    let stream = client.stream_changes().from_beginning().await?;
    Ok(())
}

// --- Filter by Entity / Operation ------------------------------------------------------

async fn filters(client: &Client) -> Res {
    // Only stream specific entities
    let stream = client
        .stream_changes()
        .entities(vec!["User", "Order"])
        .await?;
    // Exclude entities
    let stream = client
        .stream_changes()
        .exclude_entities(vec!["Session", "Log"])
        .await?;
    // Only inserts
    let stream = client
        .stream_changes()
        .operations(vec![Operation::Insert])
        .await?;
    // Inserts and updates (no deletes)
    let stream = client
        .stream_changes()
        .operations(vec![Operation::Insert, Operation::Update])
        .await?;
    Ok(())
}

// --- Checkpointing ------------------------------------------------------------------------

async fn checkpointing(client: &Client) -> Res {
    let mut last_lsn: u64 = load_checkpoint().unwrap_or(0);
    let stream = client.stream_changes().from_lsn(last_lsn).await?;
    for change in stream {
        // Process change
        process_change(&change).await?;
        // Checkpoint periodically
        if change.lsn % 1000 == 0 {
            save_checkpoint(change.lsn)?;
        }
        last_lsn = change.lsn;
    }
    Ok(())
}

// --- Use Cases: Cache Invalidation -------------------------------------------------------

async fn cache_invalidation(client: &Client, cache: &Cache) -> Res {
    let stream = client
        .stream_changes()
        .entities(vec!["User", "Product"])
        .await?;
    for change in stream {
        // CHANGED: the key is the row's key columns, not 16 bytes to hex-encode.
        let cache_key = format!(
            "{}:{}",
            change.entity,
            serde_json::to_string(&change.entity_id)?
        );
        cache.invalidate(&cache_key).await?;
        stop_check(change.lsn)?;
    }
    Ok(())
}

// --- Audit Log ------------------------------------------------------------------------------

async fn audit_log_loop(client: &Client, audit_log: &AuditLog) -> Res {
    let stream = client.stream_changes().from_beginning().await?;
    for change in stream {
        // CHANGED: the borrow first; the reference moves fields out, then borrows.
        let user_id = extract_user_id(&change);
        let lsn = change.lsn;
        let audit_entry = AuditEntry {
            timestamp: change.timestamp,
            entity_type: change.entity,
            entity_id: change.entity_id,
            operation: change.operation,
            old_values: change.old_data,
            new_values: change.new_data,
            // Add user context if available
            user_id,
        };
        audit_log.append(audit_entry).await?;
        stop_check(lsn)?;
    }
    Ok(())
}

// --- Data Replication ---------------------------------------------------------------------

async fn replication(
    source_client: &Client,
    target_client: &Target,
    last_replicated_lsn: u64,
) -> Res {
    // Replicate to secondary database
    let stream = source_client
        .stream_changes()
        .from_lsn(last_replicated_lsn)
        .await?;
    for change in stream {
        let lsn = change.lsn;
        match change.operation {
            Operation::Insert => {
                target_client
                    .insert(&change.entity, change.new_data.unwrap())
                    .await?;
            }
            Operation::Update => {
                target_client
                    .update(&change.entity, change.entity_id, change.new_data.unwrap())
                    .await?;
            }
            Operation::Delete => {
                target_client
                    .delete(&change.entity, change.entity_id)
                    .await?;
            }
            // CHANGED: two more operations.
            Operation::Truncate | Operation::Read => {}
        }
        stop_check(lsn)?;
    }
    Ok(())
}

// --- Batch Processing -------------------------------------------------------------------

async fn batch_processing(client: &Client) -> Res {
    let stream = client
        .stream_changes()
        .batch_size(100)
        .batch_timeout(Duration::from_secs(1))
        .await?;
    while let Some(batch) = stream.next_batch().await? {
        // Process batch
        let inserts: Vec<_> = batch
            .iter()
            .filter(|c| c.operation == Operation::Insert)
            .collect();
        bulk_index_to_search(inserts).await?;
        // Checkpoint at batch boundary
        if let Some(last) = batch.last() {
            save_checkpoint(last.lsn)?;
        }
    }
    Ok(())
}

// --- Error Handling: Reconnection -------------------------------------------------------

async fn reconnection(client: &Client, mut last_lsn: u64) -> Res {
    loop {
        let result = client.stream_changes().from_lsn(last_lsn).await;
        match result {
            Ok(stream) => {
                // CHANGED: items are changes; why the iteration stopped is asked after it.
                for c in &stream {
                    process_change(&c).await?;
                    last_lsn = c.lsn;
                }
                if let Some(e) = stream.take_error() {
                    log::error!("Stream error: {}", e);
                }
            }
            Err(e) => {
                log::error!("Connection error: {}", e);
            }
        }
        // Backoff before reconnecting
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

// --- Handling Gaps ------------------------------------------------------------------------

async fn handling_gaps(client: &Client, mut last_lsn: u64) -> Res {
    let stream = client.stream_changes().from_lsn(last_lsn).await?;
    for change in stream {
        if change.lsn > last_lsn + 1 {
            log::warn!("Gap detected: {} -> {}", last_lsn, change.lsn);
            // Handle gap (e.g., trigger full sync)
        }
        process_change(&change).await?;
        last_lsn = change.lsn;
    }
    Ok(())
}

// --- Best Practices: Monitor Lag ------------------------------------------------------

async fn monitor_lag(client: &Client, last_processed_lsn: u64) -> Res<u64> {
    let current_lsn = client.current_lsn().await?;
    let lag = current_lsn - last_processed_lsn;
    if lag > 10000 {
        alert("CDC consumer is falling behind!");
    }
    Ok(lag)
}

// --- Handle Schema Changes ------------------------------------------------------------

async fn schema_changes(client: &Client) -> Res {
    let stream = client.stream_changes().from_beginning().await?;
    for change in stream {
        // Check for schema compatibility
        if !is_compatible_schema(&change) {
            log::warn!("Schema change detected, restarting consumer");
            break;
        }
        process_change(&change).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running them
// ---------------------------------------------------------------------------------------

use spillway_server::config::Config;
use spillway_testkit::{PgCluster, PgOptions};

const WAIT: Duration = Duration::from_secs(60);

fn reset(stop_at: u64) {
    SEEN.lock().unwrap().clear();
    *CHECKPOINT.lock().unwrap() = None;
    *STOP_AT.lock().unwrap() = stop_at;
}

fn taken() -> Vec<String> {
    SEEN.lock().unwrap().clone()
}

/// One test runs them all (they share the stubs' statics), in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_004_snippets_behave_as_the_reference_describes() {
    let pg = tokio::task::spawn_blocking(|| PgCluster::start(PgOptions::default()))
        .await
        .unwrap()
        .unwrap();
    pg.create_database("shop").await.unwrap();
    pg.execute(
        "shop",
        r#"CREATE TABLE public."User" (id int PRIMARY KEY, name text);
           CREATE TABLE public."Order" (id int PRIMARY KEY, user_id int, status text);
           CREATE TABLE public."Product" (id int PRIMARY KEY, title text);
           CREATE TABLE public.marker (id serial PRIMARY KEY);"#,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[source]\ndsn = \"{}\"\n[log]\ndir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
        pg.dsn("shop"),
        dir.path().join("log").display()
    );
    let running = spillway_server::start(Config::from_parts(Some(("t", &text)), &[]).unwrap())
        .await
        .unwrap();
    let client = Client::new(&format!("http://{}", running.addr)).unwrap();

    // Every snippet that only opens streams runs as written.
    start_positions(&client, std::time::SystemTime::now())
        .await
        .unwrap();
    filters(&client).await.unwrap();

    // Basic streaming from "now": sees what is written after it started. When it has
    // started is seen by writing markers until one arrives.
    reset(u64::MAX);
    let c = client.clone();
    let basic = tokio::spawn(async move { basic_streaming(&c).await });
    until_open(&pg, || !taken().is_empty()).await;
    pg.execute(
        "shop",
        r#"INSERT INTO "User" VALUES (1, 'ada'), (2, 'bob');
           INSERT INTO "Order" VALUES (10, 1, 'new');
           UPDATE "Order" SET status = 'shipped' WHERE id = 10;
           DELETE FROM "User" WHERE id = 2;
           INSERT INTO "Product" VALUES (100, 'lamp');"#,
    )
    .await
    .unwrap();
    wait_for(|| real(taken()).len() >= 6).await;
    basic.abort();
    let got = real(taken());
    assert!(got[0].ends_with("public.User insert"), "{got:?}");
    assert!(got[3].ends_with("public.Order update"), "{got:?}");
    assert!(got[4].ends_with("public.User delete"), "{got:?}");
    let end: u64 = got[5].split(' ').next().unwrap().parse().unwrap();

    // Checkpointing: from_lsn(0) with no checkpoint reads everything, in order.
    reset(end);
    let e = checkpointing(&client).await.unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    let lsns: Vec<u64> = real(taken())
        .iter()
        .map(|s| s.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lsns.len(), 6, "{lsns:?}");
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");

    // Handling gaps: lsns are dense, but a schema_change takes one too (`next()` passes
    // over it), so the reference's check fires once before each table's first change
    // and never elsewhere: a gap of exactly one lsn, at a schema change.
    reset(end);
    let e = handling_gaps(&client, 0).await.unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    let items: Vec<spillway_client::StreamItem> = {
        let s = client
            .stream_changes()
            .from_beginning()
            .until_caught_up()
            .await
            .unwrap();
        let mut v = Vec::new();
        while let Some(i) = s.next_item().await.unwrap() {
            v.push(i);
        }
        v
    };
    let schema_lsns: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            spillway_client::StreamItem::SchemaChange(s) if s.lsn < end => Some(s.lsn),
            _ => None,
        })
        .collect();
    let gaps: Vec<u64> = taken()
        .iter()
        .filter_map(|s| s.strip_prefix("warn Gap detected: "))
        .map(|g| {
            let (a, b) = g.split_once(" -> ").unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(b, a + 2, "{g}");
            a + 1
        })
        .collect();
    assert_eq!(gaps, schema_lsns);

    // Cache invalidation: User and Product changes, keyed by their key columns.
    reset(end);
    let e = cache_invalidation_from_beginning(&client)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    let got = taken();
    assert!(
        got.contains(&"invalidate public.User:{\"id\":1}".to_string()),
        "{got:?}"
    );
    assert!(got.iter().all(|s| !s.contains("Order")), "{got:?}");

    // Audit log: every change from the beginning.
    reset(end);
    let e = audit_log_loop(&client, &AuditLog).await.unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    assert_eq!(real(taken()).len(), 6, "{:?}", taken());

    // Replication: inserts, the update and the delete, in order.
    reset(end);
    let e = replication(&client, &Target, 1).await.unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    assert_eq!(
        real(taken()),
        [
            "replicate insert public.User",
            "replicate insert public.User",
            "replicate insert public.Order",
            "replicate update public.Order",
            "replicate delete public.User",
            "replicate insert public.Product",
        ]
    );

    // Schema changes: every change passes the compatibility stub.
    reset(end);
    let e = schema_changes(&client).await.unwrap_err();
    assert!(e.to_string().starts_with("stop"), "{e}");
    assert_eq!(real(taken()).len(), 6);

    // Batch processing: inserts go to the index in batches, the checkpoint is the last
    // lsn of each batch.
    reset(u64::MAX);
    let c = client.clone();
    let batches = tokio::spawn(async move { batch_processing(&c).await });
    until_open(&pg, || load_checkpoint().is_some()).await;
    pg.execute(
        "shop",
        r#"INSERT INTO "Product" SELECT g, 'p' FROM generate_series(101, 350) g;
           UPDATE "Product" SET title = 'q' WHERE id = 101;"#,
    )
    .await
    .unwrap();
    // 250 inserts, one update, each its own lsn after the markers: the last batch ends
    // with the update.
    wait_for(|| real(taken()).len() >= 250).await;
    wait_for(|| load_checkpoint() == Some(running.log.committed_lsn())).await;
    batches.abort();
    assert_eq!(real(taken()).len(), 250, "the inserts, not the update");

    // Monitor lag: a filtered consumer that is caught up has no lag.
    let stream = client
        .stream_changes()
        .from_beginning()
        .entities(["User"])
        .await
        .unwrap();
    let mut users = 0;
    while users < 3 {
        tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap();
        users += 1;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // Waiting for the next change is what a caught-up consumer does; meanwhile the
        // server's heartbeat says how far it has read.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        let lag = monitor_lag(&client, stream.last_lsn().unwrap_or(0))
            .await
            .unwrap();
        if lag == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lag stays {lag}");
    }

    running.shutdown();
    running.wait().await.unwrap();
}

/// Cache invalidation as the reference writes it starts "now"; to check what it does
/// with rows already written, the same loop from the beginning.
async fn cache_invalidation_from_beginning(client: &Client) -> Res {
    let cache = Cache;
    let stream = client
        .stream_changes()
        .from_beginning()
        .entities(vec!["User", "Product"])
        .await?;
    for change in stream {
        let cache_key = format!(
            "{}:{}",
            change.entity,
            serde_json::to_string(&change.entity_id)?
        );
        cache.invalidate(&cache_key).await?;
        stop_check(change.lsn)?;
    }
    Ok(())
}

/// The stubs' records without the markers.
fn real(seen: Vec<String>) -> Vec<String> {
    seen.into_iter().filter(|s| !s.contains("marker")).collect()
}

/// Writes marker rows until `open` says a stream started "now" has seen one.
async fn until_open(pg: &PgCluster, mut open: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !open() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never opened"
        );
        pg.execute("shop", "INSERT INTO public.marker DEFAULT VALUES")
            .await
            .unwrap();
        let t = std::time::Instant::now();
        while !open() && t.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
