//! The publication keeps up with `[source] tables`: Spillway's own (marked `managed by
//! spillway`) is brought in line on start; a user's that lacks a configured table stops
//! `spillway run` with the fix, and `spillway check` says the same.

use crate::pg::{
    changes, cluster, config_text, count_changes, ids_of, read_log_dir, read_until, start,
    wait_confirmed_caught_up, wait_streaming, Proc, WAIT,
};
use spillway_testkit::PgCluster;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The tables publication `spillway` sends (as `schema.table`, sorted), whether it is
/// `FOR ALL TABLES`, and its comment.
async fn publication(pg: &PgCluster) -> (Vec<String>, bool, Option<String>) {
    let tables = pg
        .execute(
            "shop",
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
             WHERE pubname = 'spillway' ORDER BY 1",
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let row = pg
        .execute(
            "shop",
            "SELECT puballtables, obj_description(oid, 'pg_publication') FROM pg_publication \
             WHERE pubname = 'spillway'",
        )
        .await
        .unwrap();
    let row = row.first().expect("publication `spillway` exists");
    (tables, row[0].as_deref() == Some("t"), row[1].clone())
}

/// `spillway <args>` in `workdir` with a clean environment, until it exits (panics after
/// WAIT): its exit status, stdout and stderr.
async fn run_to_exit(args: &[&str], workdir: &Path) -> (ExitStatus, String, String) {
    let out_path = workdir.join("out.log");
    let err_path = workdir.join("err.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SPILLWAY_")
            || ["DB_DSN", "SLOT_NAME", "PUBLICATION_NAME", "TABLE_FILTER"].contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`spillway {}` did not exit: {}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// Waits until publication `spillway` sends exactly `want` (while `proc` runs).
async fn wait_publication(pg: &PgCluster, want: &[&str], proc: &mut Proc) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (tables, _, _) = publication(pg).await;
        if tables == want {
            return;
        }
        assert!(
            Instant::now() < deadline && !proc.has_exited(),
            "publication holds {tables:?}, not {want:?}: {}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_added_to_the_config_later_reach_the_change_log() {
    let pg = cluster(
        "CREATE TABLE public.a (id int PRIMARY KEY);
         CREATE TABLE public.b (id int PRIMARY KEY);
         CREATE TABLE public.c (id int PRIMARY KEY);
         CREATE TABLE public.\"Odd Name\" (id int PRIMARY KEY);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    std::fs::write(
        &cfg,
        config_text(&pg, &log_dir, "tables = [\"public.a\", \"public.c\"]"),
    )
    .unwrap();
    let p = Proc::start(&cfg, dir.path());
    wait_streaming(&pg).await;
    pg.execute(
        "shop",
        "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1); INSERT INTO c VALUES (1);",
    )
    .await
    .unwrap();
    wait_confirmed_caught_up(&pg).await;
    let stderr = p.stderr();
    assert!(p.terminate().success(), "{stderr}");
    let (tables, all, comment) = publication(&pg).await;
    assert_eq!(tables, ["public.a", "public.c"]);
    assert!(!all);
    assert_eq!(
        comment.as_deref(),
        Some("managed by spillway"),
        "spillway marks what it creates"
    );

    // b and a table whose name needs quoting join the config, c leaves it
    std::fs::write(
        &cfg,
        config_text(
            &pg,
            &log_dir,
            "tables = [\"public.a\", \"public.b\", \"public.Odd Name\"]",
        ),
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    let (status, stdout, stderr) = run_to_exit(&["check", "--config", &cfg_arg], dir.path()).await;
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "publication `spillway` is managed by spillway; on start spillway will add public.b, public.Odd Name to it; drop public.c from it"
        ),
        "{stdout}"
    );
    let mut p = Proc::start(&cfg, dir.path());
    wait_publication(&pg, &["public.Odd Name", "public.a", "public.b"], &mut p).await;
    pg.execute(
        "shop",
        "INSERT INTO b VALUES (2); INSERT INTO \"Odd Name\" VALUES (1);
         INSERT INTO c VALUES (2); INSERT INTO a VALUES (2);",
    )
    .await
    .unwrap();
    wait_confirmed_caught_up(&pg).await;
    let stderr = p.stderr();
    assert!(p.terminate().success(), "{stderr}");
    assert!(
        stderr.contains("publication: add public.b, public.Odd Name to it"),
        "{stderr}"
    );
    let events = read_log_dir(&log_dir);
    assert_eq!(ids_of(&events, "a"), [1, 2]);
    assert_eq!(
        ids_of(&events, "b"),
        [2],
        "b is captured from when it was added on"
    );
    assert_eq!(ids_of(&events, "Odd Name"), [1]);
    assert_eq!(
        ids_of(&events, "c"),
        [1],
        "c is no longer captured once removed"
    );
    let (tables, _, comment) = publication(&pg).await;
    assert_eq!(tables, ["public.Odd Name", "public.a", "public.b"]);
    assert_eq!(comment.as_deref(), Some("managed by spillway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_publication_without_a_configured_table_stops_run_with_the_fix() {
    let pg = cluster(
        "CREATE TABLE public.a (id int PRIMARY KEY);
         CREATE TABLE public.b (id int PRIMARY KEY);
         CREATE PUBLICATION spillway FOR TABLE public.a;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("spillway.toml");
    let cfg_arg = cfg.display().to_string();
    std::fs::write(
        &cfg,
        config_text(&pg, &log_dir, "tables = [\"public.a\", \"public.b\"]"),
    )
    .unwrap();
    let fix = "ALTER PUBLICATION \"spillway\" ADD TABLE \"public\".\"b\";";

    let (status, _, stderr) = run_to_exit(&["run", "--config", &cfg_arg], dir.path()).await;
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: publication `spillway`")
            && last.contains("does not publish public.b")
            && last.contains(&format!("fix: run {fix}")),
        "{stderr}"
    );
    let (tables, _, comment) = publication(&pg).await;
    assert_eq!(tables, ["public.a"], "the user's publication is left alone");
    assert_eq!(comment, None);

    let (status, stdout, _) = run_to_exit(&["check", "--config", &cfg_arg], dir.path()).await;
    assert!(!status.success(), "{stdout}");
    assert!(
        stdout.contains("error   publication `spillway` (not managed by spillway, so left as it is) does not publish public.b"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("fix: run {fix}")), "{stdout}");

    // The fix as printed works: check passes and b is captured.
    pg.execute("shop", fix).await.unwrap();
    let (status, stdout, _) = run_to_exit(&["check", "--config", &cfg_arg], dir.path()).await;
    assert!(status.success(), "{stdout}");
    let p = Proc::start(&cfg, dir.path());
    wait_streaming(&pg).await;
    pg.execute("shop", "INSERT INTO b VALUES (1)")
        .await
        .unwrap();
    wait_confirmed_caught_up(&pg).await;
    let stderr = p.stderr();
    assert!(p.terminate().success(), "{stderr}");
    assert_eq!(ids_of(&read_log_dir(&log_dir), "b"), [1]);

    // A configured name that is no table is refused the same way, whoever owns the publication.
    std::fs::write(
        &cfg,
        config_text(&pg, &log_dir, "tables = [\"public.a\", \"public.B\"]"),
    )
    .unwrap();
    let (status, _, stderr) = run_to_exit(&["run", "--config", &cfg_arg], dir.path()).await;
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: [source] tables names public.B, but no such table exists")
            && last.contains("public.B → public.b"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spillways_publication_follows_partitions_and_a_switch_to_patterns() {
    let pg = cluster(
        "CREATE TABLE public.a (id int PRIMARY KEY);
         CREATE TABLE public.m (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
         CREATE TABLE public.m1 PARTITION OF public.m FOR VALUES FROM (0) TO (100);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // A partitioned table named exactly: its rows arrive under its own name.
    let running = start(&pg, dir.path(), "tables = [\"public.a\", \"public.m\"]").await;
    pg.execute(
        "shop",
        "INSERT INTO m VALUES (1, 1); INSERT INTO a VALUES (1);",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(2)).await;
    let tables: Vec<&str> = changes(&events)
        .iter()
        .map(|c| c["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["m", "a"]);
    running.shutdown();
    running.wait().await.unwrap();
    let (_, all, _) = publication(&pg).await;
    assert!(!all);

    // Exact names → a pattern: FOR ALL TABLES, so a table created later is captured.
    let running = start(&pg, dir.path(), "tables = [\"public.*\"]").await;
    let (_, all, comment) = publication(&pg).await;
    assert!(all, "recreated FOR ALL TABLES");
    assert_eq!(comment.as_deref(), Some("managed by spillway"));
    pg.execute(
        "shop",
        "CREATE TABLE public.later (id int PRIMARY KEY); INSERT INTO later VALUES (1);
         INSERT INTO m VALUES (2, 2);",
    )
    .await
    .unwrap();
    let events = read_until(&running.log, 1, count_changes(4)).await;
    let ch = changes(&events);
    assert_eq!(ch.len(), 4, "{ch:?}");
    assert_eq!(ids_of(&events, "later"), [1]);
    assert_eq!(ids_of(&events, "m"), [1, 2]);
    running.shutdown();
    running.wait().await.unwrap();
}
