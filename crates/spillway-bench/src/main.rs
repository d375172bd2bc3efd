//! `make bench`: how fast Spillway captures PostgreSQL's WAL into its durable log,
//! next to `pg_recvlogical -f /dev/null` reading the same WAL in the same run.
//!
//! 1. A throwaway PostgreSQL; one publication; `2 × runs` pgoutput slots created *before*
//!    the load, so every slot has exactly the same WAL to decode.
//! 2. The workload (default: 200,000 inserts in 1,000-row transactions, then 50,000
//!    updates and 20,000 deletes, in transactions of the same size).
//! 3. For each run: `pg_recvlogical --endpos` drains one slot (timed from spawn to exit);
//!    then the real `spillway run` binary drains another (timed from spawn until the slot's
//!    `confirmed_flush_lsn` reaches the end — i.e. everything is fsynced in its log and
//!    confirmed), and its peak RSS is read from /proc.
//! 4. Prints both rates, their ratio (goal ≥ 0.9) and the medians over the runs.

mod sinks;

use clap::Parser;
use spillway_testkit::{PgCluster, PgOptions};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Spillway capture rate vs pg_recvlogical, in one run")]
struct Args {
    /// Rows inserted.
    #[arg(long, default_value_t = 200_000)]
    inserts: u64,
    /// Rows updated afterwards.
    #[arg(long, default_value_t = 50_000)]
    updates: u64,
    /// Rows deleted afterwards.
    #[arg(long, default_value_t = 20_000)]
    deletes: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1_000)]
    tx_rows: u64,
    /// Timed runs of each reader (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Steady write rate for the latency measurement (changes/s).
    #[arg(long, default_value_t = 5_000)]
    latency_rate: u64,
    /// Length of the latency measurement.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Skip the sink measurements (NATS, Kafka).
    #[arg(long)]
    no_sinks: bool,
    /// The spillway binary (default: next to this one).
    #[arg(long)]
    spillway: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn sql(pg: &PgCluster, q: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    pg.execute("bench", q)
        .await
        .map_err(|e| format!("{q}: {e}"))
}

async fn scalar(pg: &PgCluster, q: &str) -> Result<String, String> {
    sql(pg, q)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or_else(|| format!("{q}: no value"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn bench(args: Args) -> Result<(), String> {
    let spillway = match &args.spillway {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("spillway"),
    };
    if !spillway.exists() {
        return Err(format!(
            "{} not found; build it first (cargo build --release -p spillway) or pass --spillway",
            spillway.display()
        ));
    }
    let pg = tokio::task::spawn_blocking(|| PgCluster::start(PgOptions::default()))
        .await
        .map_err(|e| e.to_string())??;
    let recvlogical = {
        let p = pg.bin_dir.join("pg_recvlogical");
        if p.exists() {
            p
        } else {
            PathBuf::from("pg_recvlogical")
        }
    };
    pg.create_database("bench")
        .await
        .map_err(|e| e.to_string())?;
    let version = scalar(&pg, "SHOW server_version").await?;
    sql(
        &pg,
        "CREATE TABLE public.holding (holding_id int PRIMARY KEY, user_id int, holding_stock varchar(8), \
         holding_quantity int, datetime_created timestamptz, datetime_updated timestamptz); \
         CREATE PUBLICATION spillway FOR ALL TABLES;",
    )
    .await?;
    for i in 0..args.runs {
        sql(&pg, &format!("SELECT pg_create_logical_replication_slot('recv_{i}', 'pgoutput'); SELECT pg_create_logical_replication_slot('spill_{i}', 'pgoutput');")).await?;
    }
    if !args.no_sinks {
        sql(&pg, "SELECT pg_create_logical_replication_slot('sink_nats', 'pgoutput'); SELECT pg_create_logical_replication_slot('sink_kafka', 'pgoutput');").await?;
    }
    println!(
        "loading: {} inserts, {} updates, {} deletes in {}-row transactions (PostgreSQL {version})",
        args.inserts, args.updates, args.deletes, args.tx_rows
    );
    let load_start = Instant::now();
    let step = args.tx_rows.max(1);
    let mut id = 1;
    while id <= args.inserts {
        let end = (id + step - 1).min(args.inserts);
        sql(&pg, &format!(
            "INSERT INTO holding SELECT g, g % 1000, 'VFIAX', g % 100, now(), now() FROM generate_series({id}, {end}) g"
        )).await?;
        id = end + 1;
    }
    let mut id = 1;
    while id <= args.updates {
        let end = (id + step - 1).min(args.updates);
        sql(&pg, &format!("UPDATE holding SET holding_quantity = holding_quantity + 1, datetime_updated = now() WHERE holding_id BETWEEN {id} AND {end}")).await?;
        id = end + 1;
    }
    let mut id = 1;
    while id <= args.deletes {
        let end = (id + step - 1).min(args.deletes);
        sql(
            &pg,
            &format!("DELETE FROM holding WHERE holding_id BETWEEN {id} AND {end}"),
        )
        .await?;
        id = end + 1;
    }
    let end_lsn = scalar(&pg, "SELECT pg_current_wal_insert_lsn()::text").await?;
    let changes = args.inserts + args.updates + args.deletes;
    println!(
        "loaded in {:.1}s; WAL end {end_lsn}",
        load_start.elapsed().as_secs_f64()
    );

    let dsn = pg.dsn("bench");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (mut recv_rates, mut spill_rates, mut ratios, mut rss) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.runs {
        // pg_recvlogical, draining slot recv_i to /dev/null
        let t = Instant::now();
        let status = Command::new(&recvlogical)
            .args([
                "-d",
                &dsn,
                "--slot",
                &format!("recv_{i}"),
                "--start",
                "-f",
                "/dev/null",
                "--no-loop",
            ])
            .args([
                "-o",
                "proto_version=1",
                "-o",
                "publication_names=spillway",
                "-E",
                &end_lsn,
            ])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", recvlogical.display()))?;
        let recv_secs = t.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("pg_recvlogical failed: {status}"));
        }

        // spillway run, capturing slot spill_i into its durable log
        let log_dir = dir.path().join(format!("log-{i}"));
        let cfg = dir.path().join(format!("spillway-{i}.toml"));
        std::fs::write(&cfg, format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"spill_{i}\"\npublication = \"spillway\"\n[log]\ndir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            log_dir.display()
        )).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut child = Command::new(&spillway)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join(format!("spillway-{i}.log")))
                    .map_err(|e| e.to_string())?,
            )
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", spillway.display()))?;
        let mut peak_kib = 0u64;
        loop {
            let done = scalar(&pg, &format!(
                "SELECT confirmed_flush_lsn >= '{end_lsn}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'spill_{i}'"
            )).await? == "t";
            peak_kib = peak_kib.max(peak_rss_kib(child.id()));
            if done {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("spillway exited early: {status}"));
            }
            if t.elapsed() > Duration::from_secs(600) {
                let _ = child.kill();
                return Err("spillway did not catch up within 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let spill_secs = t.elapsed().as_secs_f64();
        peak_kib = peak_kib.max(peak_rss_kib(child.id()));
        let cpu = cpu_secs(child.id());
        if i + 1 == args.runs {
            // The last instance stays up for the consumer-side measurements below.
            let addr = api_addr(&log_dir, &cfg)?;
            consumer_side(&pg, &args, &addr, changes).await?;
        }
        spillway_testkit::send_signal(child.id(), "TERM");
        let _ = child.wait();

        let recv_rate = changes as f64 / recv_secs;
        let spill_rate = changes as f64 / spill_secs;
        println!(
            "run {}: pg_recvlogical {:>9.0} changes/s ({:.2}s) | spillway {:>9.0} changes/s ({:.2}s) | ratio {:.2} | spillway peak RSS {:.1} MiB, cpu {:.2}s",
            i + 1, recv_rate, recv_secs, spill_rate, spill_secs, spill_rate / recv_rate, peak_kib as f64 / 1024.0, cpu
        );
        recv_rates.push(recv_rate);
        spill_rates.push(spill_rate);
        ratios.push(spill_rate / recv_rate);
        rss.push(peak_kib as f64 / 1024.0);
    }
    println!(
        "median: pg_recvlogical {:.0} changes/s, spillway {:.0} changes/s, ratio {:.2} (goal >= 0.90), peak RSS {:.1} MiB",
        median(&mut recv_rates), median(&mut spill_rates), median(&mut ratios), median(&mut rss)
    );
    if !args.no_sinks {
        // The log holds one schema_change before the table's first change.
        sinks::bench_sinks(&spillway, dir.path(), &dsn, changes, changes + 1).await?;
    }
    Ok(())
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process (from /proc/PID/stat, clock ticks of 100 Hz).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name (which is in parentheses)
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; after ')' they are at 11 and 12
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The API address of a running `spillway run`, from its log (`api listening addr=…`).
fn api_addr(log_dir: &std::path::Path, cfg: &std::path::Path) -> Result<String, String> {
    let _ = log_dir;
    let log = cfg.with_file_name(
        cfg.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace(".toml", ".log"),
    );
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    text.lines()
        .find_map(|l| l.split("api listening addr=").nth(1))
        .map(|a| a.trim().to_string())
        .ok_or_else(|| format!("no api address in {}", log.display()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Read-all rate of one consumer, then commit→consumer latency at a steady write rate.
async fn consumer_side(pg: &PgCluster, args: &Args, addr: &str, logged: u64) -> Result<(), String> {
    use futures_lite::StreamExt;
    let client = reqwest::Client::new();
    // 1. one consumer reads the whole log from the beginning
    let status: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("http://{addr}/v1/status"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let current = status["current_lsn"].as_u64().unwrap_or(0);
    let t = Instant::now();
    let resp = client
        .get(format!(
            "http://{addr}/v1/changes?from=beginning&batch_size=10000"
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut body = resp.bytes_stream();
    let (mut lines, mut bytes) = (0u64, 0u64);
    while lines < current {
        let chunk = body
            .next()
            .await
            .ok_or("stream ended")?
            .map_err(|e| e.to_string())?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(body);
    println!(
        "read all: one consumer read {lines} events ({:.0} MiB) from the beginning at {:.0} events/s ({:.0} MiB/s); {logged} changes were captured",
        bytes as f64 / 1048576.0, lines as f64 / secs, bytes as f64 / 1048576.0 / secs
    );

    // 2. latency from commit to a connected consumer at a steady rate
    sql(
        pg,
        "CREATE TABLE public.latency (id bigint PRIMARY KEY, v int)",
    )
    .await?;
    let resp = client
        .get(format!(
            "http://{addr}/v1/changes?from=now&entities=public.latency"
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut body = resp.bytes_stream();
    let total = args.latency_rate * args.latency_secs;
    let rows_per_tx = (args.latency_rate / 500).max(1); // 500 transactions per second
    let txs = total / rows_per_tx;
    let interval = Duration::from_secs_f64(rows_per_tx as f64 / args.latency_rate as f64);
    let cfg = pg.connect_config("bench");
    let writer = tokio::spawn(async move {
        let mut conn = spillway_postgres::PgConnection::connect(&cfg, false)
            .await
            .map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for t in 0..txs {
            tick.tick().await;
            let a = t * rows_per_tx + 1;
            conn.simple_query(&format!(
                "INSERT INTO latency SELECT g, 1 FROM generate_series({a}, {}) g",
                a + rows_per_tx - 1
            ))
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    let mut latencies = Vec::with_capacity(total as usize);
    let mut buf = Vec::new();
    while (latencies.len() as u64) < txs * rows_per_tx {
        let chunk = tokio::time::timeout(Duration::from_secs(60), body.next())
            .await
            .map_err(|_| "latency stream stalled")?
            .ok_or("stream ended")?
            .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
            if v["type"] == "change" {
                let ts = v["timestamp"].as_i64().unwrap_or(now);
                latencies.push((now - ts) as f64 / 1000.0);
            }
        }
    }
    writer.await.map_err(|e| e.to_string())??;
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency: commit → event at a connected consumer, {} changes at {}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 <= 50 ms)",
        latencies.len(), args.latency_rate, percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
