//! The network between Spillway and PostgreSQL misbehaving: a connection that silently
//! stops relaying (a partition behind a proxy that keeps the socket open), and a
//! replication message corrupted in transit. Both through [`Proxy`], a small TCP relay
//! written here, between Spillway and a real PostgreSQL.

use crate::pg::{
    cluster_with, config_text, ids_of, read_log_dir, read_until, wait_confirmed_caught_up,
    wait_streaming, WAIT,
};
use serde_json::Value;
use spillway_server::config::Config;
use spillway_testkit::{PgCluster, PgOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Offset of the pgoutput message kind in the body of a CopyData message that carries
/// XLogData: `w`, wal_start (8), wal_end (8), server time (8).
const PGOUTPUT_KIND_AT: usize = 1 + 8 + 8 + 8;

/// A TCP relay 127.0.0.1:<port> → PostgreSQL that can
/// * freeze every connection open so far: relay nothing more in either direction but keep
///   both sockets open (new connections relay normally), and
/// * corrupt the next pgoutput Insert the server sends: its message kind `I` becomes `?`.
///
/// With `sslmode=disable` every message from the server is a tag byte, a 4-byte length
/// and the body, so the server → client direction is relayed whole messages at a time.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// Connections accepted under an older generation are frozen.
    generation: watch::Sender<u64>,
    relays: Mutex<Vec<(u64, JoinHandle<()>)>>,
    /// The sockets of frozen connections, held open until the proxy is dropped.
    held: Mutex<Vec<(TcpStream, TcpStream)>>,
    accepted: AtomicU64,
    corrupt_next_insert: AtomicBool,
    corrupted: AtomicU64,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            generation: watch::channel(0).0,
            relays: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            corrupt_next_insert: AtomicBool::new(false),
            corrupted: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(st.upstream).await else {
                    continue;
                };
                client.set_nodelay(true).ok();
                server.set_nodelay(true).ok();
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let generation = *st.generation.borrow();
                let relay = tokio::spawn(relay(client, server, generation, st.clone()));
                st.relays.lock().unwrap().push((generation, relay));
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Freezes every connection open now; returns once none of them relays any more.
    async fn freeze(&self) {
        let mut old = 0;
        self.state.generation.send_modify(|g| {
            old = *g;
            *g += 1;
        });
        let frozen: Vec<JoinHandle<()>> = {
            let mut relays = self.state.relays.lock().unwrap();
            let (frozen, live) = relays.drain(..).partition(|(g, _)| *g <= old);
            *relays = live;
            frozen.into_iter().map(|(_, h)| h).collect()
        };
        for h in frozen {
            h.await.unwrap();
        }
    }

    fn corrupt_next_insert(&self) {
        self.state.corrupt_next_insert.store(true, Ordering::SeqCst);
    }

    fn corrupted(&self) -> u64 {
        self.state.corrupted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, h) in self.state.relays.lock().unwrap().drain(..) {
            h.abort();
        }
        self.state.held.lock().unwrap().clear();
    }
}

async fn relay(mut client: TcpStream, mut server: TcpStream, generation: u64, st: Arc<ProxyState>) {
    let mut frozen = st.generation.subscribe();
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // Bytes from the server not yet forwarded: at most one incomplete message.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = async { drop(frozen.wait_for(|g| *g > generation).await) } => {
                st.held.lock().unwrap().push((client, server));
                return;
            }
            n = client.read(&mut from_client) => {
                let Ok(n @ 1..) = n else { return };
                if server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
            }
            n = server.read(&mut from_server) => {
                let Ok(n @ 1..) = n else { return };
                pending.extend_from_slice(&from_server[..n]);
                let whole = whole_messages(&mut pending, &st);
                if client.write_all(&whole).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Takes the complete server messages off the front of `pending`, corrupting the first
/// pgoutput Insert when that is asked for.
fn whole_messages(pending: &mut Vec<u8>, st: &ProxyState) -> Vec<u8> {
    let mut at = 0;
    while pending.len() - at >= 5 {
        let len = u32::from_be_bytes(pending[at + 1..at + 5].try_into().unwrap()) as usize;
        let end = at + 1 + len;
        if pending.len() < end {
            break;
        }
        let tag = pending[at];
        let body = &mut pending[at + 5..end];
        if tag == b'd'
            && body.len() > PGOUTPUT_KIND_AT
            && body[0] == b'w'
            && body[PGOUTPUT_KIND_AT] == b'I'
            && st.corrupt_next_insert.swap(false, Ordering::SeqCst)
        {
            body[PGOUTPUT_KIND_AT] = b'?';
            st.corrupted.fetch_add(1, Ordering::SeqCst);
        }
        at = end;
    }
    pending.drain(..at).collect()
}

/// The cluster's DSN for `shop`, through the proxy.
fn config_via(pg: &PgCluster, proxy: &Proxy, dir: &Path, extra_source: &str) -> String {
    let text = config_text(pg, dir, extra_source);
    let direct = format!("127.0.0.1:{}/", pg.port);
    assert!(text.contains(&direct), "{text}");
    text.replace(&direct, &format!("127.0.0.1:{}/", proxy.port()))
}

async fn slot_confirmed_at_most(pg: &PgCluster, lsn: &str) -> bool {
    let rows = pg
        .execute(
            "shop",
            &format!("SELECT confirmed_flush_lsn <= '{lsn}'::pg_lsn, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'spillway'"),
        )
        .await
        .unwrap();
    eprintln!("confirmed_flush_lsn = {:?}, bound {lsn}", rows[0][1]);
    rows[0][0].as_deref() == Some("t")
}

async fn current_wal_lsn(pg: &PgCluster) -> String {
    pg.execute("shop", "SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap()[0][0]
        .clone()
        .unwrap()
}

/// Waits until the log holds the insert of `id` into `t`; panics after `within`.
async fn wait_for_row(log: &spillway_log::ChangeLog, id: i64, within: Duration) -> Vec<Value> {
    tokio::time::timeout(
        within,
        read_until(log, 1, |ev: &[Value]| ids_of(ev, "t").contains(&id)),
    )
    .await
    .unwrap_or_else(|_| panic!("row {id} did not reach the change log within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_partitioned_connection_is_noticed_and_replaced() {
    let receive_timeout = Duration::from_secs(2);
    let pg = cluster_with(
        PgOptions::default(),
        "CREATE TABLE public.t (id int PRIMARY KEY);",
    )
    .await;
    let proxy = Proxy::start(pg.port).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_via(&pg, &proxy, dir.path(), "receive_timeout = \"2s\"");
    let config = Config::from_parts(Some(("test", &text)), &[]).unwrap();
    let running = spillway_server::start(config).await.unwrap();
    wait_streaming(&pg).await;
    pg.execute("shop", "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_for_row(&running.log, 1, WAIT).await;

    // An idle server sends nothing on its own for wal_sender_timeout / 2 (30 s here);
    // Spillway's pings keep the healthy connection from counting as lost. The window
    // is three receive timeouts of an idle stream: a reconnect would show as a new
    // connection through the proxy.
    let connections = proxy.accepted();
    tokio::time::sleep(3 * receive_timeout + Duration::from_millis(500)).await;
    assert_eq!(
        proxy.accepted(),
        connections,
        "an idle but healthy connection was given up"
    );

    // The walsender behind the frozen connection keeps the slot until the server
    // notices (wal_sender_timeout), as it would behind a real partition.
    for sql in [
        "ALTER SYSTEM SET wal_sender_timeout = '2s'",
        "SELECT pg_reload_conf()",
    ] {
        pg.execute("shop", sql).await.unwrap();
    }
    proxy.freeze().await;
    let frozen_at = Instant::now();
    pg.execute("shop", "INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    // receive_timeout to notice, wal_sender_timeout for the server to free the slot,
    // a few backoff rounds: well inside this margin. Without a receive deadline the row
    // never arrives (the frozen socket stays open).
    let within = receive_timeout + Duration::from_secs(13);
    let events = wait_for_row(&running.log, 2, within).await;
    eprintln!("row 2 arrived {:?} after the freeze", frozen_at.elapsed());
    assert!(
        proxy.accepted() > connections,
        "spillway reconnected through the proxy"
    );
    assert_eq!(ids_of(&events, "t"), [1, 2], "nothing lost, nothing twice");
    running.shutdown();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("shutdown does not hang on the frozen connection")
        .unwrap();
}

/// `spillway run --config <config>` in `workdir`, stderr to a file; the exit status is
/// what this test is about, so the child is handled here.
fn spawn_spillway(config: &Path, workdir: &Path) -> (Child, PathBuf) {
    let stderr_path = workdir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SPILLWAY_") || k == "DB_DSN" || k == "NATS_PUB_URI" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "info")
        .current_dir(workdir)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, stderr_path)
}

async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "spillway did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replication_message_stops_with_one_line_and_confirms_nothing_after_it() {
    let pg = cluster_with(
        PgOptions::default(),
        "CREATE TABLE public.t (id int PRIMARY KEY);",
    )
    .await;
    let proxy = Proxy::start(pg.port).await;
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let config = work.path().join("spillway.toml");
    std::fs::write(&config, config_via(&pg, &proxy, &log_dir, "")).unwrap();
    let (mut child, stderr_path) = spawn_spillway(&config, work.path());
    wait_streaming(&pg).await;
    pg.execute("shop", "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_confirmed_caught_up(&pg).await;

    proxy.corrupt_next_insert();
    let before_corrupt_tx = current_wal_lsn(&pg).await;
    pg.execute("shop", "INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    pg.execute("shop", "INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    let status = wait_exit(&mut child).await;
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    eprintln!("spillway's stderr:\n{stderr}");
    assert_eq!(proxy.corrupted(), 1, "the proxy corrupted one message");
    assert!(!status.success(), "exit status {status}; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.starts_with("error: ")
            && last.contains("unknown pgoutput message kind 0x3f")
            && last.contains("XLogData at "),
        "the last line is the whole error: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{stderr}"
    );
    // Nothing from the corrupt transaction on was confirmed: the slot resends it.
    assert!(
        slot_confirmed_at_most(&pg, &before_corrupt_tx).await,
        "confirmed past {before_corrupt_tx}"
    );
    let held = read_log_dir(&log_dir);
    assert_eq!(ids_of(&held, "t"), [1], "the log holds what came before");

    // And nothing is lost: without the proxy, a restart reads rows 2 and 3 again.
    drop(proxy);
    let text = config_text(&pg, &log_dir, "");
    let running = spillway_server::start(Config::from_parts(Some(("test", &text)), &[]).unwrap())
        .await
        .unwrap();
    let events = wait_for_row(&running.log, 3, WAIT).await;
    assert_eq!(ids_of(&events, "t"), [1, 2, 3]);
    running.shutdown();
    running.wait().await.unwrap();
}
