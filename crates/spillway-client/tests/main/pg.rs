//! The client against a real Spillway server (in process) capturing a throwaway
//! PostgreSQL cluster.

use spillway_client::{ChangeEvent, ChangeStream, Client, Error, Operation, StreamItem};
use spillway_server::config::Config;
use spillway_testkit::{PgCluster, PgOptions};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ITEMS: &str = "CREATE TABLE public.items (id int PRIMARY KEY, v text);";

async fn cluster(schema: &str) -> PgCluster {
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(PgOptions::default()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start postgresql: {e}"));
    cluster.create_database("shop").await.unwrap();
    cluster.execute("shop", schema).await.unwrap();
    cluster
}

/// Server options beyond the basics.
#[derive(Default)]
struct Opts<'a> {
    /// 0 = any free port.
    port: u16,
    segment_bytes: Option<&'a str>,
    token: Option<&'a str>,
}

async fn start(pg: &PgCluster, log_dir: &Path, o: Opts<'_>) -> spillway_server::Running {
    let mut text = format!(
        "[source]\ndsn = \"{}\"\nslot = \"spillway\"\npublication = \"spillway\"\n\n[log]\ndir = \"{}\"\nsegment_bytes = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{}\"\n",
        pg.dsn("shop"),
        log_dir.display(),
        o.segment_bytes.unwrap_or("1MiB"),
        o.port,
    );
    if let Some(t) = o.token {
        text.push_str(&format!("token = \"{t}\"\n"));
    }
    let config = Config::from_parts(Some(("test", &text)), &[]).unwrap();
    spillway_server::start(config).await.unwrap()
}

fn client(running: &spillway_server::Running) -> Client {
    Client::new(&format!("http://{}", running.addr)).unwrap()
}

async fn sql(pg: &PgCluster, q: &str) {
    pg.execute("shop", q).await.unwrap();
}

/// Items until `n` row changes have arrived (panics after WAIT).
async fn take_changes(stream: &mut ChangeStream, n: usize) -> Vec<StreamItem> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < n {
        let item = tokio::time::timeout(WAIT, stream.next_item())
            .await
            .unwrap_or_else(|_| panic!("timed out after {seen} of {n} changes: {out:?}"))
            .unwrap()
            .expect("stream ended");
        if matches!(item, StreamItem::Change(_)) {
            seen += 1;
        }
        out.push(item);
    }
    out
}

fn changes(items: &[StreamItem]) -> Vec<&ChangeEvent> {
    items.iter().filter_map(StreamItem::as_change).collect()
}

fn row_id(c: &ChangeEvent) -> i64 {
    c.entity_id.as_ref().unwrap()["id"].as_i64().unwrap()
}

fn ids(items: &[StreamItem]) -> Vec<i64> {
    changes(items).into_iter().map(row_id).collect()
}

fn lsns(items: &[StreamItem]) -> Vec<u64> {
    items.iter().filter_map(StreamItem::lsn).collect()
}

/// Nothing more than heartbeats for `d`.
async fn assert_quiet(stream: &mut ChangeStream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, stream.next_item()).await {
        panic!("expected nothing more, got {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_beginning_from_lsn_and_now_deliver_exactly_what_was_written() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), Opts::default()).await;
    let c = client(&running);
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g",
    )
    .await;
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(4, 7) g",
    )
    .await;
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(8, 10) g",
    )
    .await;
    sql(
        &pg,
        "UPDATE items SET v = 'two' WHERE id = 2; DELETE FROM items WHERE id = 3",
    )
    .await;

    let mut s = c.stream_changes().from_beginning().await.unwrap();
    let all = take_changes(&mut s, 12).await;
    let n = all.len() as u64;
    assert_eq!(lsns(&all), (1..=n).collect::<Vec<_>>(), "dense from 1");
    assert_eq!(ids(&all), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2, 3]);
    let ops: Vec<Operation> = changes(&all).iter().map(|c| c.operation).collect();
    assert_eq!(ops[..10], [Operation::Insert; 10]);
    assert_eq!(ops[10..], [Operation::Update, Operation::Delete]);
    let upd = changes(&all)[10];
    assert_eq!(upd.new_data.as_ref().unwrap()["v"], "two");
    assert_eq!(upd.entity, "public.items");
    assert!(matches!(all[0], StreamItem::SchemaChange(ref sc) if sc.entity == "public.items"));
    assert_eq!(s.last_lsn(), Some(n));
    assert_quiet(&mut s, Duration::from_millis(500)).await;
    assert_eq!(c.current_lsn().await.unwrap(), n);

    // from_lsn is inclusive; after_lsn starts one later
    let five = changes(&all).iter().find(|c| row_id(c) == 5).unwrap().lsn;
    let mut s = c.stream_changes().from_lsn(five).await.unwrap();
    let tail = take_changes(&mut s, 8).await;
    assert_eq!(tail[0].lsn(), Some(five));
    assert_eq!(ids(&tail), [5, 6, 7, 8, 9, 10, 2, 3]);
    assert_eq!(lsns(&tail), (five..=n).collect::<Vec<_>>());
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    let mut s = c.stream_changes().after_lsn(five).await.unwrap();
    assert_eq!(ids(&take_changes(&mut s, 1).await), [6]);

    // the default start is "now": only what is committed after opening
    let mut now = c.stream_changes().await.unwrap();
    sql(&pg, "INSERT INTO items VALUES (11, 'new')").await;
    let fresh = take_changes(&mut now, 1).await;
    assert_eq!(ids(&fresh), [11]);
    assert!(fresh.iter().all(|i| i.lsn() > Some(n)));

    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_batch_returns_the_events_in_runs() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), Opts::default()).await;
    let c = client(&running);
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'v' FROM generate_series(1, 300) g",
    )
    .await;
    let last = wait_for_lsn(&c, 301).await;

    let s = c.stream_changes().from_beginning().await.unwrap();
    let mut batches = Vec::new();
    let mut got = 0;
    while got < last {
        let b = tokio::time::timeout(WAIT, s.next_item_batch())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream goes on");
        assert!(!b.is_empty());
        got += b.len() as u64;
        batches.push(b);
    }
    let flat: Vec<StreamItem> = batches.iter().flatten().cloned().collect();
    assert_eq!(lsns(&flat), (1..=last).collect::<Vec<_>>());
    assert_eq!(ids(&flat), (1..=300).collect::<Vec<_>>());
    assert!(
        batches.len() < 300,
        "{} batches for 301 events",
        batches.len()
    );
    assert_eq!(s.last_lsn(), Some(last));

    running.shutdown();
    running.wait().await.unwrap();
}

/// Waits until the log holds at least `lsn` events; returns the current lsn.
async fn wait_for_lsn(c: &Client, lsn: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cur = c.current_lsn().await.unwrap();
        if cur >= lsn {
            return cur;
        }
        assert!(tokio::time::Instant::now() < deadline, "log stuck at {cur}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until nothing accepts connections on `port` (a stopped server's listener is gone).
async fn wait_refused(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {port} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server stops (streams end, connections are refused), rows are written while it is
/// down, a new server starts on the same port and log: the client, waiting in `next()`
/// all along, yields exactly the missing rows, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_across_a_server_restart() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let port = spillway_testkit::free_port();
    let opts = || Opts {
        port,
        ..Opts::default()
    };
    let a = start(&pg, dir.path(), opts()).await;
    let c = client(&a);
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'a' FROM generate_series(1, 5) g",
    )
    .await;
    let mut s = c
        .stream_changes()
        .from_beginning()
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .await
        .unwrap();
    let before = take_changes(&mut s, 5).await;
    assert_eq!(ids(&before), [1, 2, 3, 4, 5]);

    // keep reading while the server goes away and comes back
    let reader = tokio::spawn(async move {
        let after = take_changes(&mut s, 6).await;
        (s, after)
    });
    a.shutdown();
    a.wait().await.unwrap();
    // the port refuses connections now, and the rows below are written meanwhile
    wait_refused(port).await;
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'down' FROM generate_series(6, 8) g",
    )
    .await;
    sql(
        &pg,
        "INSERT INTO items SELECT g, 'down' FROM generate_series(9, 10) g",
    )
    .await;
    let b = start(&pg, dir.path(), opts()).await;
    sql(&pg, "INSERT INTO items VALUES (11, 'b')").await;
    let (mut s, after) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();

    assert_eq!(ids(&after), [6, 7, 8, 9, 10, 11]);
    let all: Vec<StreamItem> = before.into_iter().chain(after).collect();
    let all_lsns = lsns(&all);
    assert_eq!(
        all_lsns,
        (1..=all_lsns.len() as u64).collect::<Vec<_>>(),
        "dense, no gap, no duplicate"
    );
    assert!(s.reconnects() >= 1);
    assert_eq!(s.last_lsn(), all_lsns.last().copied());
    assert_quiet(&mut s, Duration::from_millis(500)).await;

    b.shutdown();
    b.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_missing_token_are_errors() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        &pg,
        dir.path(),
        Opts {
            token: Some("s3cret-token"),
            ..Opts::default()
        },
    )
    .await;
    let c = client(&running);
    let e = c.stream_changes().from_lsn(1).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(matches!(
        c.current_lsn().await,
        Err(Error::Unauthorized { .. })
    ));
    let c = c.with_token("s3cret-token");
    let e = c
        .stream_changes()
        .from_lsn(1)
        .batch_size(20_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Api { status: 400, message } if message.contains("batch_size")),
        "{e}"
    );
    sql(&pg, "INSERT INTO items VALUES (1, 'x')").await;
    let mut s = c.stream_changes().from_beginning().await.unwrap();
    assert_eq!(ids(&take_changes(&mut s, 1).await), [1]);

    running.shutdown();
    running.wait().await.unwrap();
}

/// Filters, batch size, time positions, named consumers, requery.
mod api {
    use super::*;
    use std::time::SystemTime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entity_and_operation_filters() {
        let pg = cluster(
            "CREATE TABLE public.items (id int PRIMARY KEY, v text);
             CREATE TABLE public.orders (id int PRIMARY KEY, v text);
             CREATE SCHEMA audit; CREATE TABLE audit.log (id int PRIMARY KEY, v text);",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let running = start(&pg, dir.path(), Opts::default()).await;
        let c = client(&running);
        sql(
            &pg,
            "INSERT INTO items VALUES (1, 'a'); INSERT INTO orders VALUES (2, 'b');
             INSERT INTO audit.log VALUES (3, 'c'); UPDATE items SET v = 'z' WHERE id = 1;
             DELETE FROM orders WHERE id = 2; INSERT INTO items VALUES (4, 'd');",
        )
        .await;

        let mut s = c
            .stream_changes()
            .from_beginning()
            .entities(["public.*"])
            .await
            .unwrap();
        let got = take_changes(&mut s, 5).await;
        assert_eq!(ids(&got), [1, 2, 1, 2, 4]);
        assert_quiet(&mut s, Duration::from_millis(300)).await;

        let mut s = c
            .stream_changes()
            .from_beginning()
            .exclude_entities(["orders", "audit.*"])
            .operations([Operation::Insert, Operation::Update])
            .await
            .unwrap();
        let got = take_changes(&mut s, 3).await;
        let seen: Vec<(i64, Operation)> = changes(&got)
            .iter()
            .map(|c| (row_id(c), c.operation))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Operation::Insert),
                (1, Operation::Update),
                (4, Operation::Insert)
            ]
        );
        assert!(changes(&got).iter().all(|c| c.entity == "public.items"));
        assert_quiet(&mut s, Duration::from_millis(300)).await;

        running.shutdown();
        running.wait().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_size_caps_batches() {
        let pg = cluster(ITEMS).await;
        let dir = tempfile::tempdir().unwrap();
        let running = start(&pg, dir.path(), Opts::default()).await;
        let c = client(&running);
        sql(
            &pg,
            "INSERT INTO items SELECT g, 'v' FROM generate_series(1, 95) g",
        )
        .await;
        let last = wait_for_lsn(&c, 96).await;
        let s = c
            .stream_changes()
            .from_beginning()
            .batch_size(10)
            .batch_timeout(Duration::from_millis(200))
            .await
            .unwrap();
        let mut sizes = Vec::new();
        let mut got = 0;
        while got < last {
            let b = s.next_item_batch().await.unwrap().unwrap_or_default();
            got += b.len() as u64;
            sizes.push(b.len());
        }
        assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{sizes:?}");
        assert_eq!(sizes.iter().filter(|&&n| n == 10).count(), 9, "{sizes:?}");

        running.shutdown();
        running.wait().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn from_timestamp_starts_at_the_first_later_commit() {
        let pg = cluster(ITEMS).await;
        let dir = tempfile::tempdir().unwrap();
        let running = start(&pg, dir.path(), Opts::default()).await;
        let c = client(&running);
        sql(
            &pg,
            "INSERT INTO items SELECT g, 'old' FROM generate_series(1, 3) g",
        )
        .await;
        wait_for_lsn(&c, 4).await;
        // rows 1..3 are captured, so their commits (timestamps from PostgreSQL's
        // clock, on this machine) are before `t`; rows 4..5 commit once
        // PostgreSQL's clock is past `t`
        let t = SystemTime::now();
        let ts = spillway_client::Timestamp::from(t).as_micros();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rows = pg
                .execute(
                    "shop",
                    &format!("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint > {ts}"),
                )
                .await
                .unwrap();
            if rows[0][0].as_deref() == Some("t") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the clock never passed {ts}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sql(
            &pg,
            "INSERT INTO items SELECT g, 'new' FROM generate_series(4, 5) g",
        )
        .await;
        let mut s = c.stream_changes().from_timestamp(t).await.unwrap();
        let got = take_changes(&mut s, 2).await;
        assert_eq!(ids(&got), [4, 5]);
        assert!(changes(&got).iter().all(|c| c.timestamp >= ts));

        running.shutdown();
        running.wait().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumers_checkpoints_and_resume() {
        let pg = cluster(ITEMS).await;
        let dir = tempfile::tempdir().unwrap();
        let running = start(&pg, dir.path(), Opts::default()).await;
        let c = client(&running);
        sql(
            &pg,
            "INSERT INTO items SELECT g, 'v' FROM generate_series(1, 6) g",
        )
        .await;

        // a consumer without checkpoint starts at the beginning
        let mut s = c.stream_changes().consumer("search-sync").await.unwrap();
        let first = take_changes(&mut s, 6).await;
        assert_eq!(first[0].lsn(), Some(1));
        assert_eq!(ids(&first), [1, 2, 3, 4, 5, 6]);
        let third = changes(&first)[2].lsn;
        let cp = c.checkpoint("search-sync", third).await.unwrap();
        assert_eq!((cp.name.as_str(), cp.checkpoint), ("search-sync", third));
        assert!(cp.updated_at_us > 1_700_000_000_000_000);

        // it resumes at checkpoint + 1
        let mut s = c.stream_changes().consumer("search-sync").await.unwrap();
        let rest = take_changes(&mut s, 3).await;
        assert_eq!(rest[0].lsn(), Some(third + 1));
        assert_eq!(ids(&rest), [4, 5, 6]);

        let info = c.consumer("search-sync").await.unwrap().unwrap();
        assert_eq!(info.checkpoint, third);
        assert_eq!(
            info.lag_events,
            Some(c.current_lsn().await.unwrap() - third)
        );
        let all = c.consumers().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "search-sync");

        // backward needs force
        let e = c.checkpoint("search-sync", 1).await.unwrap_err();
        assert!(matches!(e, Error::CheckpointConflict { lsn: 1, .. }), "{e}");
        assert_eq!(
            c.checkpoint_force("search-sync", 1)
                .await
                .unwrap()
                .checkpoint,
            1
        );
        let mut s = c.stream_changes().consumer("search-sync").await.unwrap();
        assert_eq!(
            take_changes(&mut s, 1)
                .await
                .iter()
                .find_map(StreamItem::lsn),
            Some(2)
        );

        assert!(c.delete_consumer("search-sync").await.unwrap());
        assert!(c.consumer("search-sync").await.unwrap().is_none());
        assert!(!c.delete_consumer("search-sync").await.unwrap());
        assert!(c.consumers().await.unwrap().is_empty());

        running.shutdown();
        running.wait().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requery_required_when_the_position_was_trimmed() {
        let pg = cluster(ITEMS).await;
        let dir = tempfile::tempdir().unwrap();
        let running = start(
            &pg,
            dir.path(),
            Opts {
                segment_bytes: Some("4KiB"),
                ..Opts::default()
            },
        )
        .await;
        let c = client(&running);
        sql(
            &pg,
            "INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 100) g",
        )
        .await;
        let last = wait_for_lsn(&c, 101).await;
        let log = running.log.clone();
        let report = tokio::task::spawn_blocking(move || log.trim_before(last))
            .await
            .unwrap()
            .unwrap();
        let oldest = c.status().await.unwrap().oldest_lsn;
        assert!(report.segments_deleted > 0 && oldest > 1, "oldest {oldest}");

        let mut s = c.stream_changes().from_lsn(1).await.unwrap();
        let first = tokio::time::timeout(WAIT, s.next_item())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            first,
            Some(StreamItem::RequeryRequired {
                requested_lsn: 1,
                oldest_lsn: oldest
            })
        );
        let next = take_changes(&mut s, 1).await;
        assert_eq!(next[0].lsn(), Some(oldest));
        assert_eq!(s.last_lsn(), Some(oldest));

        // a consumer whose checkpoint was trimmed away gets it too
        c.checkpoint("late", 1).await.unwrap();
        let s = c.stream_changes().consumer("late").await.unwrap();
        let first = s.next_item_batch().await.unwrap().unwrap_or_default();
        assert!(
            matches!(first[..], [StreamItem::RequeryRequired { requested_lsn: 2, oldest_lsn }] if oldest_lsn == oldest),
            "{first:?}"
        );

        running.shutdown();
        running.wait().await.unwrap();
    }
}

/// Issue 8.3 in the client: a `from_timestamp` start inside a trimmed range
/// is told with `RequeryRequired` (it used to start silently at the oldest
/// retained event), then the stream goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_timestamp_inside_the_trimmed_range_is_a_requery() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        &pg,
        dir.path(),
        Opts {
            segment_bytes: Some("4KiB"),
            ..Opts::default()
        },
    )
    .await;
    for i in 0..10 {
        sql(
            &pg,
            &format!(
                "INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series({}, {}) g",
                i * 20 + 1,
                i * 20 + 20
            ),
        )
        .await;
    }
    let c = client(&running);
    let mut all = c.stream_changes().from_beginning().await.unwrap();
    let items = take_changes(&mut all, 200).await;
    drop(all);
    // The commit time of an event that the trim below deletes.
    let early = changes(&items)
        .into_iter()
        .find(|e| e.lsn == 20)
        .map(|e| e.timestamp)
        .unwrap();
    let report = running.log.trim_before(100).unwrap();
    assert!(report.segments_deleted > 0);
    let oldest = running.log.oldest_lsn();
    assert!(oldest > 20, "lsn 20 was trimmed");

    let mut s = c
        .stream_changes()
        .from_timestamp(spillway_client::Timestamp::from_micros(early))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, s.next_item())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        StreamItem::RequeryRequired { oldest_lsn, .. } => assert_eq!(oldest_lsn, oldest),
        other => panic!("a start inside the trimmed range was not told: {other:?}"),
    }
    let next = take_changes(&mut s, 1).await;
    assert_eq!(lsns(&next).first().copied(), Some(oldest));
    running.shutdown();
    running.wait().await.unwrap();
}

/// `entities` naming a table that is not captured fails at open, naming it, instead of
/// a stream that never yields anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_entities_naming_no_captured_table_fail_at_open() {
    let pg = cluster(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&pg, dir.path(), Opts::default()).await;
    let c = client(&running);
    let e = c
        .stream_changes()
        .entities(["public.item"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.to_string().contains("`public.item` matches no table"),
        "{e}"
    );
    assert!(e.to_string().contains("public.items"), "{e}");
    c.stream_changes().entities(["public.items"]).await.unwrap();
    running.shutdown();
    running.wait().await.unwrap();
}
